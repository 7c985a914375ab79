"""A fake `forkd serve` for the SDK's tests: http.server on a temporary
AF_UNIX socket (or TCP), one thread per connection, that records every
request and answers from a route table set by the test."""

from __future__ import annotations

import base64
import http.server
import json
import os
import shutil
import socketserver
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

# The tests exercise the source tree, unless FORKD_SDK_TEST_INSTALLED=1 asks
# for the installed package (e.g. in a venv after `pip install ./sdk/python`).
if os.environ.get("FORKD_SDK_TEST_INSTALLED") != "1":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Request:
    method: str
    path: str
    query: Dict[str, str]
    headers: Dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


@dataclass
class Reply:
    """A canned answer: JSON (``obj``), raw bytes (``body``), or a stream of
    NDJSON lines (``lines``), sent chunked with ``delay`` between chunks."""
    status: int = 200
    obj: Any = None
    body: Optional[bytes] = None
    content_type: Optional[str] = None
    lines: Optional[List[Any]] = None
    delay: float = 0.0
    chunked: bool = True
    sleep: float = 0.0           # before answering at all
    before_last: Optional[Callable[[], None]] = None  # called before the last line is sent


def error_reply(status: int, code: str, message: str) -> Reply:
    return Reply(status=status, obj={"error": {"code": code, "message": message}})


def vm_json(vm_id: str = "vm-00000001", **over) -> Dict[str, Any]:
    vm = {"id": vm_id, "state": "running", "pid": 4242, "parent": None, "zygote": None,
          "snapshot": None, "tag": None, "image": "forkd-test-base", "kernel": None,
          "mem_mib": 512, "cpus": 1, "created": "2026-12-04T17:20:00.123Z",
          "branched_at": None, "pause_us": None,
          "control_socket": f"/var/lib/forkd/vms/{vm_id}/control.sock",
          "vsock_socket": f"/var/lib/forkd/vms/{vm_id}/vsock.sock", "exit_status": None,
          "limits": None}
    vm.update(over)
    return vm


def limits_json(vm_id: str = "vm-00000001", **over) -> Dict[str, Any]:
    """A VM's "limits" as the daemon reports them (its cgroup named after vm_id)."""
    lim = {"memory_max_mib": None, "cpu_max": None, "pids_max": None,
           "cgroup": f"/sys/fs/cgroup/forkd/{vm_id}"}
    lim.update(over)
    return lim


def snap_json(tag: str = "t1", **over) -> Dict[str, Any]:
    s = {"tag": tag, "state": "ready", "path": f"/var/lib/forkd/snapshots/{tag}",
         "parent_vm": "vm-00000001", "created": "2026-12-04T17:21:00.000Z", "pause_us": 1500}
    s.update(over)
    return s


def b64(data) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.b64encode(data).decode("ascii")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-forkd/0"

    def log_message(self, fmt, *args):  # AF_UNIX has no client address
        pass

    def _handle(self):
        fake: FakeDaemon = self.server.fake
        u = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        req = Request(self.command, u.path, query, {k.lower(): v for k, v in self.headers.items()},
                      body)
        with fake.lock:
            fake.requests.append(req)
        if fake.token is not None and req.headers.get("authorization") != f"Bearer {fake.token}":
            return self._send(error_reply(401, "unauthorized", "bad or missing token"))
        route = fake.routes.get((self.command, u.path))
        if route is None:
            return self._send(error_reply(404, "not_found", f"no route {self.command} {u.path}"))
        reply = route(req) if callable(route) else route
        if reply.sleep:
            time.sleep(reply.sleep)
        self._send(reply)

    do_GET = do_POST = do_PUT = do_DELETE = _handle

    def _send(self, r: Reply):
        if r.lines is not None:
            return self._stream(r)
        if r.obj is not None:
            data = json.dumps(r.obj).encode()
            ctype = r.content_type or "application/json"
        else:
            data = r.body or b""
            ctype = r.content_type or "application/octet-stream"
        self.send_response(r.status)
        if r.status != 204:
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if r.status != 204:
            self.wfile.write(data)

    def _stream(self, r: Reply):
        fake: FakeDaemon = self.server.fake
        self.send_response(r.status)
        self.send_header("Content-Type", "application/x-ndjson")
        if r.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.flush()
        for i, line in enumerate(r.lines):
            if i == len(r.lines) - 1 and r.before_last:
                r.before_last()
            data = line if isinstance(line, bytes) else (json.dumps(line) + "\n").encode()
            with fake.lock:
                fake.events.append(("send", i))  # logged before the client can see it
            if r.chunked:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                self.wfile.write(data)
            self.wfile.flush()
            if r.delay:
                time.sleep(r.delay)
        if r.chunked:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()


class _Quiet:
    def handle_error(self, request, client_address):
        # A client that gave up (timeout tests) is expected; anything else is
        # recorded so that the test sees it.
        exc = sys.exc_info()[1]
        if isinstance(exc, (BrokenPipeError, ConnectionResetError)):
            return
        self.fake.event(("server-error", repr(exc)))
        super().handle_error(request, client_address)


class _UnixServer(_Quiet, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True


class _TCPServer(_Quiet, socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


class FakeDaemon:
    """``with FakeDaemon() as fake:``: ``fake.socket`` (or ``fake.url`` with
    tcp=True), ``fake.routes[(METHOD, PATH)] = Reply(...) | fn(req) -> Reply``,
    ``fake.requests`` the requests received, ``fake.events`` a log shared
    with the test."""

    def __init__(self, tcp: bool = False, token: Optional[str] = None,
                 ssl_context=None):
        self.routes: Dict[Any, Any] = {}
        self.requests: List[Request] = []
        self.events: List[Any] = []
        self.lock = threading.Lock()
        self.token = token
        self.dir = tempfile.mkdtemp(prefix="forkd-sdk-test-")
        if tcp:
            self.server = _TCPServer(("127.0.0.1", 0), _Handler)
            if ssl_context is not None:
                self.server.socket = ssl_context.wrap_socket(self.server.socket,
                                                             server_side=True)
            scheme = "https" if ssl_context is not None else "http"
            self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
            self.socket = None
        else:
            self.socket = os.path.join(self.dir, "forkd.sock")
            self.server = _UnixServer(self.socket, _Handler)
            self.url = None
        self.server.fake = self
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "FakeDaemon":
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def event(self, e) -> None:
        with self.lock:
            self.events.append(e)

    @property
    def last(self) -> Request:
        with self.lock:
            return self.requests[-1]
