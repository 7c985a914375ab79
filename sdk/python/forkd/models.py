"""The daemon's objects (docs/rest-api.md) as small dataclasses.

Each ``from_json`` keeps the fields this SDK does not know in ``raw``, so a
newer daemon's additions are not lost.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


def _split(cls, obj: Any) -> Dict[str, Any]:
    if not isinstance(obj, dict):
        from .errors import ConnectionFailed
        raise ConnectionFailed(f"expected a JSON object for {cls.__name__}, got {obj!r:.200}")
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields if f.name != "raw"}
    for f in fields:
        if (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                and f.name not in obj):
            from .errors import ConnectionFailed
            raise ConnectionFailed(
                f"{cls.__name__} without its {f.name!r} field in the daemon's answer: "
                f"{obj!r:.200}")
    known = {k: v for k, v in obj.items() if k in names}
    raw = {k: v for k, v in obj.items() if k not in names}
    return {**known, "raw": raw}


@dataclass
class Limits:
    """A VM's cgroup v2 limits (docs/rest-api.md): each None when not limited.
    BRANCH children share their source's cgroup, so they report the same
    ``cgroup`` and limits: one budget for the family."""
    cgroup: Optional[str] = None  # /sys/fs/cgroup/forkd/vm-<id>
    memory_max_mib: Optional[int] = None  # memory.max, no swap; over it the OOM killer ends the VM
    cpu_max: Optional[str] = None  # cpu.max "QUOTA/PERIOD" in microseconds
    pids_max: Optional[int] = None  # pids.max: tasks of the VM and its BRANCH children
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, obj: Any) -> "Limits":
        return cls(**_split(cls, obj))


@dataclass
class VM:
    """A VM as the daemon reports it."""
    id: str
    state: Optional[str] = None  # starting | running | paused | exited | failed
    pid: Optional[int] = None
    parent: Optional[str] = None
    zygote: Optional[str] = None
    snapshot: Optional[str] = None
    tag: Optional[str] = None
    image: Optional[str] = None
    kernel: Optional[str] = None
    mem_mib: Optional[int] = None
    cpus: Optional[int] = None
    created: Optional[str] = None
    branched_at: Optional[str] = None
    pause_us: Optional[int] = None
    start_ms: Optional[float] = None  # create and spawn answers: its VMM's start to its answer
    control_socket: Optional[str] = None
    vsock_socket: Optional[str] = None
    exit_status: Optional[int] = None
    net: Optional[str] = None  # none | host | nat
    net_netns: Optional[str] = None  # its network namespace, forkd-...
    net_host_addr: Optional[str] = None  # where the host reaches it: 10.200.S.2
    limits: Optional[Limits] = None  # None: no cgroup of its own (no limit was asked)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, obj: Any) -> "VM":
        d = _split(cls, obj)
        if d.get("limits") is not None:
            d["limits"] = Limits.from_json(d["limits"])
        return cls(**d)


@dataclass
class Snapshot:
    """A snapshot (by tag)."""
    tag: str
    state: Optional[str] = None  # writing | ready | failed
    path: Optional[str] = None
    parent_vm: Optional[str] = None
    image: Optional[str] = None  # the image its VM booted
    net: Optional[str] = None  # its VM's network policy, which the VMs spawned from it get
    created: Optional[str] = None
    pause_us: Optional[int] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, obj: Any) -> "Snapshot":
        return cls(**_split(cls, obj))


@dataclass
class Image:
    """A root file system image in the daemon's cache (by name), with what uses it."""
    name: str
    path: Optional[str] = None
    size: Optional[int] = None
    created: Optional[str] = None
    packages: Optional[List[str]] = None
    vms: List[str] = field(default_factory=list)
    snapshots: List[str] = field(default_factory=list)
    in_use: bool = False  # DELETE is refused (Conflict) while True
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, obj: Any) -> "Image":
        return cls(**_split(cls, obj))


@dataclass
class BranchResult:
    """The answer to a BRANCH: the zygote holding the branch instant, the
    source's pause, the children and, with persist, the snapshot."""
    zygote: Optional[str] = None
    pause_us: Optional[int] = None
    vmm_ms: Optional[float] = None  # the source VMM's branch call
    children: List[VM] = field(default_factory=list)
    snapshot: Optional[Snapshot] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, obj: Any) -> "BranchResult":
        d = _split(cls, obj)
        d["children"] = [VM.from_json(c) for c in (d.get("children") or [])]
        if d.get("snapshot") is not None:
            d["snapshot"] = Snapshot.from_json(d["snapshot"])
        return cls(**d)


@dataclass
class TreeNode:
    """One line of the lineage tree, depth-first (roots have depth 0)."""
    vm: VM
    depth: int = 0
    last_sibling: bool = False
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, obj: Any) -> "TreeNode":
        d = _split(cls, obj)
        d["vm"] = VM.from_json(d.get("vm"))
        return cls(**d)


@dataclass
class CommandResult:
    """The outcome of a command: ``exit_code`` (None when a signal ended it),
    ``stdout``/``stderr`` as text (UTF-8, invalid bytes replaced), ``signal``
    (None unless a signal ended it), and the exact bytes."""
    exit_code: Optional[int]
    stdout: str = ""
    stderr: str = ""
    signal: Optional[int] = None
    stdout_bytes: bytes = field(default=b"", repr=False)
    stderr_bytes: bytes = field(default=b"", repr=False)
    timed_out: bool = False
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.signal is None


__all__ = ["VM", "Limits", "Snapshot", "BranchResult", "TreeNode", "CommandResult"]
