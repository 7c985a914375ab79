"""Controller: one method per route of forkd serve's REST API (docs/rest-api.md)."""

from __future__ import annotations

import base64
import codecs
import json
import re
import socket
import ssl
import time
import http.client
import urllib.parse
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from ._transport import DEFAULT_TIMEOUT, Transport
from .errors import CommandTimeout, ConnectionFailed, RequestTimeout, error_from_object
from .models import VM, BranchResult, CommandResult, Image, Snapshot, TreeNode

#: Default time limit of a command (seconds), as in E2B; 0 means none.
DEFAULT_COMMAND_TIMEOUT = 60.0
#: How long past a command's time limit the client waits for the daemon's verdict.
COMMAND_TIMEOUT_GRACE = 10.0

_MISSING = object()

#: The cgroup limits' ranges (docs/rest-api.md), checked before a request is sent.
MEMORY_MAX_MIB_RANGE = (16, 1 << 20)
PIDS_MAX_RANGE = (1, 4194304)
CPU_QUOTA_MIN_US = 1000
CPU_PERIOD_RANGE_US = (1000, 1000000)
_CPU_MAX_RE = re.compile(r"([0-9]+)(?:/([0-9]+))?")


def _seg(s: str) -> str:
    """One path segment, percent-encoded."""
    if not isinstance(s, str) or not s:
        raise ValueError(f"expected a non-empty id or tag, got {s!r}")
    return urllib.parse.quote(s, safe="")


def _int_in(name: str, v: Any, lo: int, hi: int, unit: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"{name}: expected an integer from {lo} to {hi} ({unit}), got {v!r}")
    return v


def _limits(memory_max_mib: Optional[int], cpu_max: Optional[str],
            pids_max: Optional[int]) -> Dict[str, Any]:
    """The cgroup limits of a create or spawn body (only those given), checked
    as the daemon checks them."""
    body: Dict[str, Any] = {}
    if memory_max_mib is not None:
        body["memory_max_mib"] = _int_in("memory_max_mib", memory_max_mib,
                                         *MEMORY_MAX_MIB_RANGE, "MiB")
    if cpu_max is not None:
        m = _CPU_MAX_RE.fullmatch(cpu_max) if isinstance(cpu_max, str) else None
        period = int(m.group(2)) if m and m.group(2) is not None else 100000
        if (not m or int(m.group(1)) < CPU_QUOTA_MIN_US
                or not CPU_PERIOD_RANGE_US[0] <= period <= CPU_PERIOD_RANGE_US[1]):
            raise ValueError(f"cpu_max: expected a string QUOTA[/PERIOD] in microseconds, "
                             f"e.g. \"50000\" for half a CPU (quota at least "
                             f"{CPU_QUOTA_MIN_US}, period {CPU_PERIOD_RANGE_US[0]} to "
                             f"{CPU_PERIOD_RANGE_US[1]}, default 100000), got {cpu_max!r}")
        body["cpu_max"] = cpu_max
    if pids_max is not None:
        body["pids_max"] = _int_in("pids_max", pids_max, *PIDS_MAX_RANGE,
                                   "tasks of the VM and its BRANCH children")
    return body


def _argv(cmd: Union[str, Sequence[str]]) -> List[str]:
    if isinstance(cmd, str):
        return ["/bin/sh", "-c", cmd]
    argv = list(cmd)
    if not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError(f"cmd must be a string or a non-empty list of strings, got {cmd!r}")
    return argv


class Controller:
    """A client of ``forkd serve``.

    ``Controller()`` talks to the Unix socket $FORKD_SOCKET (else
    /var/lib/forkd/forkd.sock); ``Controller(socket=PATH)`` to another one;
    ``Controller(url="https://host:8443", token=...)`` over TCP/TLS with a
    bearer token (default $FORKD_TOKEN). ``timeout`` (seconds) bounds every
    call's connect and each read/write; each method also takes ``timeout=``.
    ``ssl_context`` verifies a TLS daemon (e.g. one with a private CA:
    ``ssl.create_default_context(cafile=...)``).
    """

    def __init__(self, socket: Optional[str] = None, url: Optional[str] = None,
                 token: Optional[str] = None, timeout: Optional[float] = DEFAULT_TIMEOUT,
                 ssl_context: Optional[ssl.SSLContext] = None):
        self.transport = Transport(socket_path=socket, url=url, token=token,
                                   timeout=timeout, ssl_context=ssl_context)

    def __repr__(self) -> str:
        return f"Controller({self.transport.describe()})"

    @property
    def timeout(self) -> Optional[float]:
        return self.transport.timeout

    def _kw(self, timeout) -> Dict[str, Any]:
        return {} if timeout is _MISSING else {"timeout": timeout}

    def _json(self, method: str, path: str, *, timeout=_MISSING, **kw) -> Any:
        return self.transport.json(method, path, **self._kw(timeout), **kw)

    # -- health -------------------------------------------------------------

    def health(self, *, timeout=_MISSING) -> Dict[str, Any]:
        """GET /healthz: ``{"ok": True, "vms": N}``."""
        return self._json("GET", "/healthz", timeout=timeout)

    def metrics(self, *, timeout=_MISSING) -> str:
        """GET /metrics: the Prometheus text."""
        r = self.transport.request("GET", "/metrics", headers={"Accept": "text/plain"},
                                   **self._kw(timeout))
        return r.body.decode("utf-8", errors="replace")

    # -- VMs ----------------------------------------------------------------

    def create_vm(self, image: Optional[str] = None, *, kernel: Optional[str] = None,
                  initrd: Optional[str] = None, append: Optional[str] = None,
                  mem_mib: Optional[int] = None, cpus: Optional[int] = None,
                  tag: Optional[str] = None, vsock: Optional[bool] = None,
                  net: Optional[str] = None, memory_max_mib: Optional[int] = None,
                  cpu_max: Optional[str] = None, pids_max: Optional[int] = None,
                  timeout=_MISSING) -> VM:
        """POST /v1/vms: boots a VM from an image name or a kernel (with an
        optional initrd and command line); returns it once its control socket
        answers. ``net``: "none" (the default: no network device), "host" or
        "nat" (docs/networking.md); the VM's ``net_host_addr`` is where the
        host reaches it. The daemon checks the value (BadRequest).

        ``memory_max_mib`` (16..1048576; no swap), ``cpu_max`` ("QUOTA[/PERIOD]"
        in microseconds: "50000" is half a CPU) and ``pids_max`` (1..4194304
        tasks) put the VM in a cgroup v2 of its own (its BRANCH children share
        it); the VM's ``limits`` says them. A VM over its memory is killed
        (state "exited", exit_status 137). Checked here (ValueError); a daemon
        without cgroup v2 answers Unsupported (501)."""
        if (image is None) == (kernel is None):
            raise ValueError("give exactly one of image= or kernel=")
        if image is not None and (initrd is not None or append is not None):
            raise ValueError("initrd= and append= go with kernel=, not image=")
        body: Dict[str, Any] = {}
        for k, v in (("image", image), ("kernel", kernel), ("initrd", initrd),
                     ("append", append), ("mem_mib", mem_mib), ("cpus", cpus),
                     ("tag", tag), ("vsock", vsock), ("net", net)):
            if v is not None:
                body[k] = v
        body.update(_limits(memory_max_mib, cpu_max, pids_max))
        return VM.from_json(self._json("POST", "/v1/vms", json_body=body, timeout=timeout))

    def vms(self, *, timeout=_MISSING) -> List[VM]:
        """GET /v1/vms."""
        doc = self._json("GET", "/v1/vms", timeout=timeout)
        return [VM.from_json(v) for v in _list(doc, "vms")]

    def vm(self, vm_id: str, *, timeout=_MISSING) -> VM:
        """GET /v1/vms/{id}."""
        return VM.from_json(self._json("GET", f"/v1/vms/{_seg(vm_id)}", timeout=timeout))

    def delete_vm(self, vm_id: str, cascade: bool = False, *, timeout=_MISSING) -> List[str]:
        """DELETE /v1/vms/{id}: stops the VM (with cascade, its descendants
        too); returns the removed ids. Conflict if it has children and no
        cascade."""
        q = {"cascade": "true"} if cascade else None
        doc = self._json("DELETE", f"/v1/vms/{_seg(vm_id)}", query=q, timeout=timeout)
        return list(_list(doc, "removed"))

    def branch(self, vm_id: str, n: int = 1, persist: bool = False,
               tag: Optional[str] = None, wait: bool = True, *,
               timeout=_MISSING) -> BranchResult:
        """POST /v1/vms/{id}/branch: N children continue from this instant.
        ``persist`` (needs ``tag``) also writes the instant as a snapshot."""
        if persist and not tag:
            raise ValueError("persist=True needs a tag")
        body: Dict[str, Any] = {"n": n, "persist": bool(persist), "wait": bool(wait)}
        if tag is not None:
            body["tag"] = tag
        doc = self._json("POST", f"/v1/vms/{_seg(vm_id)}/branch", json_body=body,
                         timeout=timeout)
        return BranchResult.from_json(doc)

    def snapshot(self, vm_id: str, tag: str, *, timeout=_MISSING) -> Snapshot:
        """POST /v1/vms/{id}/snapshot: written while the VM is paused."""
        doc = self._json("POST", f"/v1/vms/{_seg(vm_id)}/snapshot", json_body={"tag": tag},
                         timeout=timeout)
        return Snapshot.from_json(doc)

    # -- snapshots ----------------------------------------------------------

    def snapshots(self, *, timeout=_MISSING) -> List[Snapshot]:
        """GET /v1/snapshots (those still being written too)."""
        doc = self._json("GET", "/v1/snapshots", timeout=timeout)
        return [Snapshot.from_json(s) for s in _list(doc, "snapshots")]

    def get_snapshot(self, tag: str, *, timeout=_MISSING) -> Snapshot:
        """GET /v1/snapshots/{tag}."""
        return Snapshot.from_json(self._json("GET", f"/v1/snapshots/{_seg(tag)}",
                                             timeout=timeout))

    def spawn(self, tag: str, n: int = 1, *, memory_max_mib: Optional[int] = None,
              cpu_max: Optional[str] = None, pids_max: Optional[int] = None,
              timeout=_MISSING) -> List[VM]:
        """POST /v1/snapshots/{tag}/spawn: N VMs restored from the snapshot;
        with limits (as ``create_vm``), each VM in a cgroup of its own with
        the same limits."""
        body: Dict[str, Any] = {"n": n, **_limits(memory_max_mib, cpu_max, pids_max)}
        doc = self._json("POST", f"/v1/snapshots/{_seg(tag)}/spawn", json_body=body,
                         timeout=timeout)
        return [VM.from_json(v) for v in _list(doc, "vms")]

    def delete_snapshot(self, tag: str, cascade: bool = False, *,
                        timeout=_MISSING) -> List[str]:
        """DELETE /v1/snapshots/{tag}; returns the removed ids and tags."""
        q = {"cascade": "true"} if cascade else None
        doc = self._json("DELETE", f"/v1/snapshots/{_seg(tag)}", query=q, timeout=timeout)
        return list(_list(doc, "removed"))

    # -- images -------------------------------------------------------------

    def images(self, *, timeout=_MISSING) -> List[Image]:
        """GET /v1/images: the daemon's image cache, with the VMs and snapshots
        made from each (images are built with `forkd image build`, not here)."""
        doc = self._json("GET", "/v1/images", timeout=timeout)
        return [Image.from_json(i) for i in _list(doc, "images")]

    def image(self, name: str, *, timeout=_MISSING) -> Image:
        """GET /v1/images/{name}."""
        return Image.from_json(self._json("GET", f"/v1/images/{_seg(name)}", timeout=timeout))

    def delete_image(self, name: str, *, timeout=_MISSING) -> List[str]:
        """DELETE /v1/images/{name}; Conflict while a live VM or a snapshot uses it."""
        doc = self._json("DELETE", f"/v1/images/{_seg(name)}", timeout=timeout)
        return list(_list(doc, "removed"))

    def tree(self, *, timeout=_MISSING) -> List[TreeNode]:
        """GET /v1/tree: the lineage, depth-first."""
        doc = self._json("GET", "/v1/tree", timeout=timeout)
        return [TreeNode.from_json(t) for t in _list(doc, "tree")]

    # -- inside a VM --------------------------------------------------------

    def exec(self, vm_id: str, cmd: Union[str, Sequence[str]], *,
             env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
             uid: Optional[int] = None, stdin: Union[bytes, str, None] = None,
             timeout: Optional[float] = None,
             on_stdout: Optional[Callable[[str], Any]] = None,
             on_stderr: Optional[Callable[[str], Any]] = None) -> CommandResult:
        """POST /v1/vms/{id}/exec, streamed: the callbacks get each chunk of
        output (text) as it arrives. A string ``cmd`` runs with /bin/sh -c.
        ``timeout`` in seconds (default 60; 0: none): the agent kills the
        command then, and CommandTimeout is raised."""
        body: Dict[str, Any] = {"argv": _argv(cmd)}
        if env is not None:
            body["env"] = {str(k): str(v) for k, v in env.items()}
        if cwd is not None:
            body["cwd"] = cwd
        if uid is not None:
            body["uid"] = int(uid)
        if stdin is not None:
            if isinstance(stdin, str):
                stdin = stdin.encode("utf-8")
            body["stdin"] = base64.b64encode(bytes(stdin)).decode("ascii")
        if timeout is None:
            timeout = DEFAULT_COMMAND_TIMEOUT
        if timeout < 0:
            raise ValueError("timeout must be >= 0 (0: no limit)")
        if timeout > 0:
            body["timeout_ms"] = max(1, int(round(timeout * 1000)))
            io_timeout: Optional[float] = timeout + COMMAND_TIMEOUT_GRACE
        else:
            io_timeout = None
        path = f"/v1/vms/{_seg(vm_id)}/exec"
        stream = _ExecStream(on_stdout, on_stderr)
        started = time.monotonic()
        try:
            conn, resp = self.transport.open("POST", path, json_body=body, timeout=io_timeout,
                                             headers={"Accept": "application/x-ndjson"})
        except RequestTimeout as e:
            raise CommandTimeout(f"{_argv(cmd)!r}: no answer within {io_timeout} s") from e
        try:
            try:
                while not stream.done:
                    chunk = resp.read1(65536)
                    if not chunk:
                        break
                    stream.feed(chunk)
                stream.finish()
            except socket.timeout as e:
                raise CommandTimeout(
                    f"{_argv(cmd)!r}: no output nor exit status for {io_timeout} s",
                    stdout=stream.text(1), stderr=stream.text(2)) from e
            except (http.client.HTTPException, OSError) as e:
                raise ConnectionFailed(
                    f"exec stream of {vm_id} broke: {type(e).__name__}: {e}") from e
        finally:
            conn.close()
        # A SIGKILL at the time limit is the agent's timeout even if the last
        # line does not say "timed_out".
        limit = timeout if timeout > 0 else None
        return stream.result(_argv(cmd), limit, time.monotonic() - started)

    def read_file(self, vm_id: str, path: str, *, timeout=_MISSING) -> bytes:
        """GET /v1/vms/{id}/files?path=P: the file's bytes."""
        r = self.transport.request("GET", f"/v1/vms/{_seg(vm_id)}/files", query={"path": path},
                                   headers={"Accept": "application/octet-stream"},
                                   **self._kw(timeout))
        return r.body

    def write_file(self, vm_id: str, path: str, data: Union[bytes, bytearray, memoryview, str],
                   mode: int = 0o644, *, timeout=_MISSING) -> None:
        """PUT /v1/vms/{id}/files?path=P&mode=0644 with the raw bytes."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        data = bytes(data)
        if not isinstance(mode, int) or mode < 0 or mode > 0o7777:
            raise ValueError(f"mode must be an int in 0..0o7777, got {mode!r}")
        self.transport.request("PUT", f"/v1/vms/{_seg(vm_id)}/files",
                               query={"path": path, "mode": format(mode, "04o")},
                               body=data, headers={"Content-Type": "application/octet-stream"},
                               **self._kw(timeout))


def _list(doc: Any, key: str) -> list:
    if not isinstance(doc, dict) or not isinstance(doc.get(key), list):
        raise ConnectionFailed(f"expected {{{key!r}: [...]}} from the daemon, got {doc!r:.200}")
    return doc[key]


class _ExecStream:
    """Parses the NDJSON of an exec as it arrives."""

    def __init__(self, on_stdout, on_stderr):
        self.buf = bytearray()
        self.out = bytearray()
        self.err = bytearray()
        self.cb = {1: on_stdout, 2: on_stderr}
        self.dec = {1: codecs.getincrementaldecoder("utf-8")(errors="replace"),
                    2: codecs.getincrementaldecoder("utf-8")(errors="replace")}
        self.done = False
        self.final: Optional[Dict[str, Any]] = None

    def text(self, fd: int) -> str:
        return bytes(self.out if fd == 1 else self.err).decode("utf-8", errors="replace")

    def feed(self, chunk: bytes) -> None:
        self.buf += chunk
        while not self.done:
            i = self.buf.find(b"\n")
            if i < 0:
                break
            line = bytes(self.buf[:i])
            del self.buf[:i + 1]
            self._line(line)

    def finish(self) -> None:
        if not self.done and self.buf.strip():
            line = bytes(self.buf)
            self.buf.clear()
            self._line(line)
        for fd in (1, 2):
            rest = self.dec[fd].decode(b"", final=True)
            if rest and self.cb[fd]:
                self.cb[fd](rest)

    def _output(self, fd: int, value: Any) -> None:
        try:
            data = base64.b64decode(value, validate=True)
        except (ValueError, TypeError) as e:
            raise ConnectionFailed(f"exec stream: bad base64 in {'stdout' if fd == 1 else 'stderr'}") from e
        (self.out if fd == 1 else self.err).extend(data)
        cb = self.cb[fd]
        if cb is not None and data:
            text = self.dec[fd].decode(data)
            if text:
                cb(text)

    def _line(self, line: bytes) -> None:
        line = line.strip()
        if not line:
            return
        try:
            obj = json.loads(line.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise ConnectionFailed(f"exec stream: not a JSON line: {line[:200]!r}") from e
        if not isinstance(obj, dict):
            raise ConnectionFailed(f"exec stream: not a JSON object: {line[:200]!r}")
        if "stdout" in obj:
            self._output(1, obj["stdout"])
        if "stderr" in obj:
            self._output(2, obj["stderr"])
        if "exit" in obj or "signal" in obj or "error" in obj:
            self.done = True
            self.final = obj

    def result(self, argv: List[str], limit: Optional[float] = None,
               elapsed: float = 0.0) -> CommandResult:
        obj = self.final
        if obj is None:
            raise ConnectionFailed(f"exec stream of {argv!r} ended without an exit status")
        stdout, stderr = self.text(1), self.text(2)
        if "error" in obj:
            err = error_from_object(obj["error"])
            if isinstance(err, CommandTimeout):
                err.stdout, err.stderr = stdout, stderr
            raise err
        exit_code = obj.get("exit")
        sig = obj.get("signal")
        raw = {k: v for k, v in obj.items() if k not in ("exit", "signal", "timed_out")}
        res = CommandResult(exit_code=exit_code if sig is None else None,
                            stdout=stdout, stderr=stderr, signal=sig,
                            stdout_bytes=bytes(self.out), stderr_bytes=bytes(self.err),
                            timed_out=bool(obj.get("timed_out")), raw=raw)
        if "timed_out" not in obj and sig == 9 and limit is not None and elapsed >= limit:
            res.timed_out = True
        if res.timed_out:
            raise CommandTimeout(f"{argv!r} timed out (killed by signal {sig})",
                                 stdout=stdout, stderr=stderr, result=res)
        return res


__all__ = ["Controller", "DEFAULT_COMMAND_TIMEOUT"]
