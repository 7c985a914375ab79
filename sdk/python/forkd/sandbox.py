"""An E2B-style sandbox over a forkd VM: commands, files, branch."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from .controller import Controller
from .errors import NotFound
from .models import VM, CommandResult, Snapshot

DEFAULT_IMAGE = "forkd-test-base"


class Commands:
    """``sandbox.commands``: run commands inside the VM (through its agent)."""

    def __init__(self, sandbox: "Sandbox"):
        self._sb = sandbox

    def run(self, cmd: Union[str, Sequence[str]], env: Optional[Mapping[str, str]] = None,
            cwd: Optional[str] = None, user: Union[str, int, None] = None,
            uid: Optional[int] = None, stdin: Union[bytes, str, None] = None,
            timeout: Optional[float] = None,
            on_stdout: Optional[Callable[[str], Any]] = None,
            on_stderr: Optional[Callable[[str], Any]] = None) -> CommandResult:
        """Runs ``cmd`` (a string runs as ``/bin/sh -c cmd``) and returns its
        CommandResult; ``on_stdout``/``on_stderr`` get the output as it
        arrives. ``user`` is a user name (looked up in the guest's
        /etc/passwd) or a uid; ``uid`` a uid. ``timeout`` in seconds (default
        60, 0 for none) raises CommandTimeout."""
        if user is not None and uid is not None:
            raise ValueError("give user= or uid=, not both")
        if user is not None:
            uid = self._sb._uid_of(user)
        return self._sb.controller.exec(self._sb.id, cmd, env=env, cwd=cwd, uid=uid,
                                        stdin=stdin, timeout=timeout,
                                        on_stdout=on_stdout, on_stderr=on_stderr)


class Files:
    """``sandbox.files``: read and write files inside the VM."""

    def __init__(self, sandbox: "Sandbox"):
        self._sb = sandbox

    def read(self, path: str) -> bytes:
        """The file's exact bytes."""
        return self._sb.controller.read_file(self._sb.id, path)

    def read_text(self, path: str, encoding: str = "utf-8", errors: str = "replace") -> str:
        return self.read(path).decode(encoding, errors=errors)

    def write(self, path: str, data: Union[bytes, bytearray, memoryview, str],
              mode: int = 0o644) -> None:
        """Writes (creates or replaces) the file; a str is written as UTF-8."""
        self._sb.controller.write_file(self._sb.id, path, data, mode=mode)


class Sandbox:
    """A running VM seen as a sandbox.

    ``Sandbox.create(image=...)`` boots one; ``Sandbox(vm_id, controller)``
    attaches to an existing VM. As a context manager it is killed on exit,
    with its descendants (its BRANCH children), unless ``keep=True``.
    """

    def __init__(self, vm_id: str, controller: Optional[Controller] = None, *,
                 keep: bool = False, vm: Optional[VM] = None):
        if not isinstance(vm_id, str) or not vm_id:
            raise ValueError(f"expected a VM id, got {vm_id!r}")
        self.id = vm_id
        self.controller = controller if controller is not None else Controller()
        self.keep = keep
        self.vm = vm
        self.commands = Commands(self)
        self.files = Files(self)
        self._uids: Optional[Dict[str, int]] = None

    @classmethod
    def create(cls, image: Optional[str] = DEFAULT_IMAGE,
               controller: Optional[Controller] = None, *, keep: bool = False,
               **kw) -> "Sandbox":
        """Boots a VM (``Controller.create_vm`` arguments: mem_mib, cpus, tag,
        net="none"|"host"|"nat", the cgroup limits memory_max_mib, cpu_max and
        pids_max, or kernel=/initrd=/append= instead of image) and returns its
        sandbox."""
        controller = controller if controller is not None else Controller()
        if kw.get("kernel") is not None:
            image = None
        vm = controller.create_vm(image=image, **kw)
        return cls(vm.id, controller, keep=keep, vm=vm)

    @classmethod
    def connect(cls, vm_id: str, controller: Optional[Controller] = None, *,
                keep: bool = True) -> "Sandbox":
        """Attaches to an existing VM (checked); kept on context exit by default."""
        controller = controller if controller is not None else Controller()
        vm = controller.vm(vm_id)
        return cls(vm.id, controller, keep=keep, vm=vm)

    @classmethod
    def spawn(cls, tag: str, n: int = 1, controller: Optional[Controller] = None, *,
              keep: bool = False, memory_max_mib: Optional[int] = None,
              cpu_max: Optional[str] = None, pids_max: Optional[int] = None) -> List["Sandbox"]:
        """N sandboxes restored from snapshot ``tag``; with the cgroup limits
        of ``Controller.create_vm``, each in a cgroup of its own."""
        controller = controller if controller is not None else Controller()
        vms = controller.spawn(tag, n, memory_max_mib=memory_max_mib, cpu_max=cpu_max,
                               pids_max=pids_max)
        return [cls(vm.id, controller, keep=keep, vm=vm) for vm in vms]

    def __repr__(self) -> str:
        return f"Sandbox({self.id!r})"

    def info(self) -> VM:
        """The VM as the daemon reports it now."""
        self.vm = self.controller.vm(self.id)
        return self.vm

    def branch(self, n: int = 1, *, keep: Optional[bool] = None) -> List["Sandbox"]:
        """BRANCHes this VM into ``n`` children that continue from this instant."""
        res = self.controller.branch(self.id, n)
        keep = self.keep if keep is None else keep
        return [Sandbox(c.id, self.controller, keep=keep, vm=c) for c in res.children]

    def snapshot(self, tag: str) -> Snapshot:
        """Writes the VM's state as snapshot ``tag`` (spawn it later)."""
        return self.controller.snapshot(self.id, tag)

    def kill(self, cascade: bool = False) -> List[str]:
        """Stops the VM (with cascade its descendants too); an already gone VM
        is not an error. Returns the removed ids."""
        try:
            return self.controller.delete_vm(self.id, cascade=cascade)
        except NotFound:
            return []

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        # The VM and what was BRANCHed from it: a `with` block scopes them all.
        if not self.keep:
            self.kill(cascade=True)

    def _uid_of(self, user: Union[str, int]) -> int:
        if isinstance(user, int):
            return user
        if user == "root":
            return 0
        if user.isdigit():
            return int(user)
        if self._uids is None:
            uids: Dict[str, int] = {}
            for line in self.files.read("/etc/passwd").decode("utf-8", "replace").splitlines():
                f = line.split(":")
                if len(f) >= 3 and f[2].isdigit():
                    uids.setdefault(f[0], int(f[2]))
            self._uids = uids
        if user not in self._uids:
            raise ValueError(f"no user {user!r} in the sandbox's /etc/passwd")
        return self._uids[user]


__all__ = ["Sandbox", "Commands", "Files", "DEFAULT_IMAGE"]
