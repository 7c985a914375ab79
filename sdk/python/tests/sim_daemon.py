#!/usr/bin/env python3
"""A simulated `forkd serve` for testing clients without KVM: the REST API of
docs/rest-api.md over a Unix socket, with an in-memory registry (VMs,
branches, snapshots, spawn, lineage, cascades, the contract's validation and
error codes) and commands and files served by THIS host (no VM: every
"guest" shares the host's filesystem; exec runs the argv here, streamed as
NDJSON, with env, cwd, uid, stdin and timeouts).

It is what test_e2e_script.py runs e2e_daemon.py against, so that the e2e
script itself is tested before the real daemon exists. Standalone:

    python3 sdk/python/tests/sim_daemon.py --socket /tmp/sim.sock
"""

from __future__ import annotations

import argparse
import base64
import datetime
import http.server
import itertools
import json
import os
import pwd
import re
import selectors
import signal
import socketserver
import subprocess
import threading
import time
import urllib.parse

TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")
CPU_MAX_RE = re.compile(r"^([0-9]+)(?:/([0-9]+))?$")
LIMIT_FIELDS = ("memory_max_mib", "cpu_max", "pids_max")


class ApiError(Exception):
    STATUS = {"bad_request": 400, "unauthorized": 401, "forbidden": 403, "not_found": 404,
              "method_not_allowed": 405, "conflict": 409, "payload_too_large": 413,
              "too_many_requests": 429, "internal": 500, "not_implemented": 501,
              "unavailable": 503}

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.status = self.STATUS[code]


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def fields(body, allowed, required=()):
    if not isinstance(body, dict):
        raise ApiError("bad_request", "body: expected a JSON object")
    for k in body:
        if k not in allowed:
            raise ApiError("bad_request", f"unknown field {k!r}")
    for k in required:
        if k not in body:
            raise ApiError("bad_request", f"missing field {k!r}")


def int_in(body, key, lo, hi, default):
    v = body.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ApiError("bad_request", f"{key}: expected an integer in {lo}..{hi}, got {v!r}")
    return v


def check_tag(tag):
    if not isinstance(tag, str) or not TAG_RE.match(tag):
        raise ApiError("bad_request", f"tag {tag!r}: [A-Za-z0-9._-], 1..64, not starting "
                       "with . or -")


def limits_of(body, route):
    """The cgroup limits a create or spawn body asks for (checked as the
    contract says), or None when it asks for none."""
    if not any(k in body for k in LIMIT_FIELDS):
        return None
    lim = {"memory_max_mib": None, "cpu_max": None, "pids_max": None}
    if "memory_max_mib" in body:
        lim["memory_max_mib"] = int_in(body, "memory_max_mib", 16, 1 << 20, None)
    if "cpu_max" in body:
        v = body["cpu_max"]
        m = CPU_MAX_RE.match(v) if isinstance(v, str) else None
        period = int(m.group(2)) if m and m.group(2) else 100000
        if not m or int(m.group(1)) < 1000 or not 1000 <= period <= 1000000:
            raise ApiError("bad_request", f'{route}: "cpu_max" {v!r}: expected "QUOTA[/PERIOD]" '
                           "in microseconds (quota at least 1000, period 1000 to 1000000, "
                           "default 100000)")
        lim["cpu_max"] = f"{int(m.group(1))}/{period}"
    if "pids_max" in body:
        lim["pids_max"] = int_in(body, "pids_max", 1, 4194304, None)
    return lim


class Sim:
    def __init__(self, images=("forkd-test-base",), cgroup2=True):
        self.lock = threading.Lock()
        self.images = set(images)
        # False: a machine without cgroup v2, where asking for limits is 501
        self.cgroup2 = cgroup2
        self.vms = {}      # id -> VM dict (insertion order = creation order)
        self.snaps = {}    # tag -> Snapshot dict
        self.ids = itertools.count(1)
        self.requests = 0
        self.pauses = []

    def _id(self, prefix):
        return f"{prefix}-{next(self.ids):08x}"

    def _check_cgroup2(self, limits):
        if limits is not None and not self.cgroup2:
            raise ApiError("not_implemented", "cgroup limits: /sys/fs/cgroup is not a cgroup v2 "
                           "filesystem (a tmpfs: this host mounts cgroup v1 hierarchies under "
                           "it)")

    def _vm(self, vm_id):
        vm = self.vms.get(vm_id)
        if vm is None:
            raise ApiError("not_found", f"VM {vm_id}: not found")
        return vm

    def _new_vm(self, **kw):
        vm_id = self._id("vm")
        vm = {"id": vm_id, "state": "running", "pid": os.getpid(), "parent": None,
              "zygote": None, "snapshot": None, "tag": None, "image": None, "kernel": None,
              "mem_mib": 512, "cpus": 1, "created": now(), "branched_at": None,
              "pause_us": None, "control_socket": f"/sim/vms/{vm_id}/control.sock",
              "vsock_socket": f"/sim/vms/{vm_id}/vsock.sock", "exit_status": None,
              "net": "none", "net_netns": None, "net_host_addr": None, "limits": None}
        vm.update(kw)
        if vm["limits"] is not None and vm["parent"] is None:
            # a cgroup of its own; a BRANCH child keeps its source's (one budget)
            vm["limits"] = {**vm["limits"], "cgroup": f"/sys/fs/cgroup/forkd/{vm_id}"}
        if vm["net"] != "none":
            # a namespace and a 10.200.S.2 address of its own, as forkd-vmm --net-policy makes
            slot = len(self.vms)
            vm["net_netns"] = f"forkd-{vm_id}"
            vm["net_host_addr"] = f"10.200.{(4 * slot) >> 8}.{(4 * slot) % 256 + 2}"
        self.vms[vm_id] = vm
        return vm

    # -- operations (the shapes of docs/rest-api.md) -------------------------

    def create(self, body):
        fields(body, {"image", "kernel", "initrd", "append", "mem_mib", "cpus", "tag", "vsock",
                      "net", *LIMIT_FIELDS})
        if ("image" in body) == ("kernel" in body):
            raise ApiError("bad_request", "exactly one of image and kernel")
        if "image" in body and body["image"] not in self.images:
            raise ApiError("not_found", f"image {body['image']!r}: not found")
        if "tag" in body:
            check_tag(body["tag"])
        net = body.get("net", "none")
        if net not in ("none", "host", "nat"):
            raise ApiError("bad_request", f'POST /v1/vms: "net" {net!r}: expected "none", '
                           '"host" or "nat"')
        mem = int_in(body, "mem_mib", 64, 1 << 20, 512)
        cpus = int_in(body, "cpus", 1, 64, 1)
        limits = limits_of(body, "POST /v1/vms")
        self._check_cgroup2(limits)
        with self.lock:
            return self._new_vm(image=body.get("image"), kernel=body.get("kernel"),
                                mem_mib=mem, cpus=cpus, tag=body.get("tag"), net=net,
                                limits=limits)

    def delete_vm(self, vm_id, cascade):
        with self.lock:
            self._vm(vm_id)
            kids = [v for v in self.vms.values() if v["parent"] == vm_id]
            if kids and not cascade:
                raise ApiError("conflict", f"VM {vm_id} has {len(kids)} children "
                               "(cascade=true removes them too)")
            removed = []

            def rm(i):
                for k in [v["id"] for v in self.vms.values() if v["parent"] == i]:
                    rm(k)
                del self.vms[i]
                removed.append(i)
            rm(vm_id)
            return {"removed": removed}

    def _snap(self, tag, vm_id, pause_us):
        if tag in self.snaps:
            raise ApiError("conflict", f"snapshot {tag!r} exists")
        s = {"tag": tag, "state": "ready", "path": f"/sim/snapshots/{tag}",
             "parent_vm": vm_id, "created": now(), "pause_us": pause_us,
             "net": self.vms[vm_id]["net"]}
        self.snaps[tag] = s
        return s

    def branch(self, vm_id, body):
        fields(body, {"n", "persist", "tag", "wait"})
        persist = body.get("persist", False)
        if not isinstance(persist, bool) or not isinstance(body.get("wait", True), bool):
            raise ApiError("bad_request", "persist, wait: booleans")
        n = int_in(body, "n", 0 if persist else 1, 64, 1)
        if persist and "tag" not in body:
            raise ApiError("bad_request", "persist needs a tag")
        if "tag" in body:
            check_tag(body["tag"])
        with self.lock:
            src = self._vm(vm_id)
            pause = 700 + len(self.pauses)
            self.pauses.append(pause)
            zy = self._id("zy")
            res = {"zygote": zy, "pause_us": pause, "children": []}
            if persist:
                res["snapshot"] = self._snap(body["tag"], vm_id, pause)
            t = now()
            for _ in range(n):
                res["children"].append(self._new_vm(
                    parent=vm_id, zygote=zy, image=src["image"], kernel=src["kernel"],
                    mem_mib=src["mem_mib"], cpus=src["cpus"], branched_at=t, pause_us=pause,
                    net=src["net"], limits=src["limits"]))
            return res

    def snapshot(self, vm_id, body):
        fields(body, {"tag"}, required=("tag",))
        check_tag(body["tag"])
        with self.lock:
            self._vm(vm_id)
            return self._snap(body["tag"], vm_id, 1500)

    def spawn(self, tag, body):
        fields(body, {"n", *LIMIT_FIELDS})
        n = int_in(body, "n", 1, 64, 1)
        limits = limits_of(body, f"POST /v1/snapshots/{tag}/spawn")
        self._check_cgroup2(limits)
        with self.lock:
            s = self.snaps.get(tag)
            if s is None:
                raise ApiError("not_found", f"snapshot {tag!r}: not found")
            return {"vms": [self._new_vm(snapshot=tag, image="forkd-test-base",
                                         net=s.get("net", "none"), limits=limits)
                            for _ in range(n)]}

    def get_snapshot(self, tag):
        with self.lock:
            if tag not in self.snaps:
                raise ApiError("not_found", f"snapshot {tag!r}: not found")
            return self.snaps[tag]

    def delete_snapshot(self, tag, cascade):
        with self.lock:
            if tag not in self.snaps:
                raise ApiError("not_found", f"snapshot {tag!r}: not found")
            users = [v["id"] for v in self.vms.values() if v["snapshot"] == tag]
            if users and not cascade:
                raise ApiError("conflict", f"snapshot {tag!r}: {len(users)} VMs spawned from it")
        removed = []
        for u in users:
            if u in self.vms:
                removed += self.delete_vm(u, True)["removed"]
        with self.lock:
            del self.snaps[tag]
        return {"removed": removed + [tag]}

    def tree(self):
        with self.lock:
            out = []

            def walk(vm, depth, last):
                out.append({"vm": vm, "depth": depth, "last_sibling": last})
                kids = [v for v in self.vms.values() if v["parent"] == vm["id"]]
                for i, k in enumerate(kids):
                    walk(k, depth + 1, i == len(kids) - 1)
            roots = [v for v in self.vms.values() if v["parent"] not in self.vms]
            for i, r in enumerate(roots):
                walk(r, 0, i == len(roots) - 1)
            return {"tree": out}

    def metrics(self):
        lines = []
        for name in ("forkd_branch_pause_seconds", "forkd_spawn_seconds",
                     "forkd_restore_seconds", "forkd_exec_seconds"):
            vals = [p / 1e6 for p in self.pauses] if name == "forkd_branch_pause_seconds" else []
            lines += [f"# TYPE {name} histogram",
                      f'{name}_bucket{{le="+Inf"}} {len(vals)}',
                      f"{name}_sum {sum(vals)}", f"{name}_count {len(vals)}"]
        lines += ["# TYPE forkd_http_requests_total counter",
                  f'forkd_http_requests_total{{method="GET",code="200"}} {self.requests}']
        return "\n".join(lines) + "\n"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "forkd-sim/0"

    def log_message(self, fmt, *args):
        pass

    # -- plumbing --------------------------------------------------------------

    def _json(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _bytes(self, status, data, ctype="application/octet-stream"):
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if status != 204:
            self.wfile.write(data)

    def _chunk(self, obj):
        data = (json.dumps(obj) + "\n").encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _jbody(self, raw):
        try:
            return json.loads(raw.decode() or "{}")
        except (ValueError, UnicodeDecodeError):
            raise ApiError("bad_request", "body: not JSON")

    def _handle(self):
        sim: Sim = self.server.sim
        sim.requests += 1
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        parts = [urllib.parse.unquote(p) for p in u.path.strip("/").split("/")]
        raw = self._body()
        m = self.command
        try:
            self._route(sim, m, parts, q, raw)
        except ApiError as e:
            self._json(e.status, {"error": {"code": e.code, "message": str(e)}})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

    def _route(self, sim, m, p, q, raw):
        cascade = q.get("cascade") == "true"

        def allow(*methods):
            if m not in methods:
                raise ApiError("method_not_allowed", f"{m} {self.path}")

        if p == ["healthz"]:
            allow("GET")
            return self._json(200, {"ok": True, "vms": len(sim.vms)})
        if p == ["metrics"]:
            allow("GET")
            return self._bytes(200, sim.metrics().encode(), "text/plain; version=0.0.4")
        if p == ["v1", "vms"]:
            allow("GET", "POST")
            if m == "GET":
                with sim.lock:
                    return self._json(200, {"vms": list(sim.vms.values())})
            return self._json(201, sim.create(self._jbody(raw)))
        if len(p) == 3 and p[:2] == ["v1", "vms"]:
            allow("GET", "DELETE")
            if m == "GET":
                with sim.lock:
                    return self._json(200, sim._vm(p[2]))
            return self._json(200, sim.delete_vm(p[2], cascade))
        if len(p) == 4 and p[:2] == ["v1", "vms"]:
            vm_id, op = p[2], p[3]
            if op == "branch":
                allow("POST")
                return self._json(201, sim.branch(vm_id, self._jbody(raw)))
            if op == "snapshot":
                allow("POST")
                return self._json(201, sim.snapshot(vm_id, self._jbody(raw)))
            if op == "exec":
                allow("POST")
                with sim.lock:
                    sim._vm(vm_id)
                return self._exec(self._jbody(raw))
            if op == "files":
                allow("GET", "PUT")
                with sim.lock:
                    sim._vm(vm_id)
                return self._files(m, q, raw)
        if p == ["v1", "snapshots"]:
            allow("GET")
            with sim.lock:
                return self._json(200, {"snapshots": list(sim.snaps.values())})
        if len(p) == 3 and p[:2] == ["v1", "snapshots"]:
            allow("GET", "DELETE")
            if m == "GET":
                return self._json(200, sim.get_snapshot(p[2]))
            return self._json(200, sim.delete_snapshot(p[2], cascade))
        if len(p) == 4 and p[:2] == ["v1", "snapshots"] and p[3] == "spawn":
            allow("POST")
            return self._json(201, sim.spawn(p[2], self._jbody(raw)))
        if p == ["v1", "tree"]:
            allow("GET")
            return self._json(200, sim.tree())
        raise ApiError("not_found", f"no route {self.path}")

    # -- files and exec, on this host ------------------------------------------

    def _files(self, m, q, raw):
        path = q.get("path")
        if not path or not path.startswith("/"):
            raise ApiError("bad_request", "path: an absolute path")
        if m == "GET":
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                raise ApiError("not_found", f"{path}: no such file")
            except IsADirectoryError:
                raise ApiError("bad_request", f"{path}: a directory")
            return self._bytes(200, data)
        mode = int(q.get("mode", "0644"), 8)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.chmod(path, mode)
        return self._bytes(204, b"")

    def _exec(self, body):
        fields(body, {"argv", "env", "cwd", "uid", "stdin", "timeout_ms"}, required=("argv",))
        argv = body["argv"]
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise ApiError("bad_request", "argv: a non-empty list of strings")
        env = dict(os.environ)
        env.update(body.get("env") or {})
        stdin = base64.b64decode(body["stdin"]) if "stdin" in body else None
        timeout_ms = int_in(body, "timeout_ms", 0, 365 * 86400 * 1000, 0)
        kw = {}
        if "uid" in body:
            uid = int_in(body, "uid", 0, 1 << 31, 0)
            try:
                gid = pwd.getpwuid(uid).pw_gid
            except KeyError:
                gid = uid
            kw = {"user": uid, "group": gid, "extra_groups": [gid]}
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        try:
            p = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin is not None
                                 else subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, cwd=body.get("cwd"), env=env,
                                 start_new_session=True, **kw)
        except OSError as e:
            self._chunk({"error": {"code": "bad_request", "message": f"ARGV0: {e}"}})
            self.wfile.write(b"0\r\n\r\n")
            return
        if stdin is not None:
            def feed():
                try:
                    p.stdin.write(stdin)
                    p.stdin.close()
                except OSError:
                    pass
            threading.Thread(target=feed, daemon=True).start()
        sel = selectors.DefaultSelector()
        sel.register(p.stdout, selectors.EVENT_READ, "stdout")
        sel.register(p.stderr, selectors.EVENT_READ, "stderr")
        deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms else None
        timed_out = False
        try:
            while sel.get_map():
                wait = None
                if deadline is not None and not timed_out:
                    wait = deadline - time.monotonic()
                    if wait <= 0:
                        os.killpg(p.pid, signal.SIGKILL)
                        timed_out = True
                        wait = None
                for key, _ in sel.select(wait):
                    data = os.read(key.fileobj.fileno(), 65536)
                    if not data:
                        sel.unregister(key.fileobj)
                        continue
                    self._chunk({key.data: base64.b64encode(data).decode()})
            rc = p.wait()
        except (BrokenPipeError, ConnectionResetError):
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            raise
        finally:
            p.stdout.close()
            p.stderr.close()
        final = {"signal": -rc} if rc < 0 else {"exit": rc}
        if timed_out:
            final = {"signal": signal.SIGKILL.value, "timed_out": True}
        self._chunk(final)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class SimServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path, sim=None):
        super().__init__(path, Handler)
        self.sim = sim or Sim()

    def handle_error(self, request, client_address):
        import sys
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser(description="a simulated forkd serve (no VMs)")
    ap.add_argument("--socket", required=True)
    ap.add_argument("--no-cgroup2", action="store_true",
                    help="a machine without cgroup v2: limits are refused with 501")
    args = ap.parse_args()
    if os.path.exists(args.socket):
        os.unlink(args.socket)
    srv = SimServer(args.socket, Sim(cgroup2=not args.no_cgroup2))

    def stop(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
    print(f"sim_daemon: serving on {args.socket}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
        os.unlink(args.socket)


if __name__ == "__main__":
    main()
