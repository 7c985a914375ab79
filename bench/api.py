#!/usr/bin/env python3
"""The REST API's overhead: forkd serve against the raw control socket / agent.

Starts a real `forkd serve` (build/forkd, build/forkd-vmm) on a Unix socket in
a fresh state directory and times, alternating API and raw samples:

  branch      POST /v1/vms/{id}/branch {"n":1} against the same BRANCH sent to
              that VM's control socket ({"cmd":"branch","n":1,"dir":...,
              "wait":true}; the zygote release follows outside the timing, as the
              daemon releases it after answering). Children are removed between samples (DELETE
              ?cascade=true; raw: the child's `shutdown`), outside the timing.
  spawn       POST /v1/snapshots/{tag}/spawn {"n":1} against starting
              `forkd-vmm --restore SNAP --overlay-dir --control --serial
              --serial-in none` directly (os.posix_spawn, as the daemon) until its
              control socket answers `status`: told by --ready-fd, and polled every
              1 ms; the row's raw is the faster of the two at p50 ("raw" names it).
  exec        (Linux guest, image forkd-test-base) POST /v1/vms/{id}/exec
              {"argv":["true"]}, NDJSON read to its end, against the same exec
              sent to the agent over the VM's vsock socket from Python
              (docs/agent-protocol.md: CONNECT 52, REQUEST, frames to EXIT).
  get         GET /healthz, /v1/vms/{id}, /v1/tree one after the other (the HTTP
              floor; no raw peer).
  concurrent  N requests at once from N threads (barrier): GET /v1/vms/{id},
              GET /v1/tree and a few POST .../branch on VMs of their own.

overhead_ms_pXX = api_ms_pXX - raw_ms_pXX (a difference of percentiles, not a
percentile of differences). The timed branch and spawn requests go through a client
as thin as the raw peers' (one sendall, read to Content-Length: "http_client":"thin";
--http-client stdlib times them with http.client, as the SDK does). Latencies are
client-side wall times, the client included; server_ms_pXX is the daemon's own
latency_ms from its audit log (request headers in to the answer sent). JSON lines on stdout, progress on stderr.

  api.py native [--samples N] [--concurrent N] [--host H] [--http-client thin|stdlib]
  api.py exec [--samples N] [--host H]
"""
import argparse, http.client, json, os, shutil, socket, struct, subprocess, sys, tempfile
import select, threading, time
from control_call import call  # bench/ is sys.path[0] when run as python3 bench/X.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(ROOT, "build", "forkd")
VMM = os.path.join(ROOT, "build", "forkd-vmm")
PROBE = os.path.join(ROOT, "build", "guest", "probe.elf")
IMAGE = "forkd-test-base"
# Pause between samples (the source re-collapses its RAM after a zygote release).
GAP_S = float(os.environ.get("API_BENCH_GAP_MS", "200")) / 1000.0


def emit(obj):
    print(json.dumps(obj), flush=True)


def log(msg):
    print("bench/api: " + msg, file=sys.stderr, flush=True)


def pct(values, p):
    v = sorted(values)
    if not v:
        return None
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


def r3(x):
    return None if x is None else round(x, 3)


def host_fields(host):
    """"host":"native", or "host":"nested","tcg":true|false (FORKD_TESTHOST_KIND's value)."""
    if host.startswith("nested"):
        return {"host": "nested", "tcg": host != "nested-kvm", "jail": False}
    return {"host": "native", "jail": False}


# ---- the daemon over HTTP/1.1 on its Unix socket (one connection per request) ----

class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=120):
        super().__init__("localhost", timeout=timeout)
        self.path_ = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path_)
        self.sock = s


def http(sock, method, path, body=None, timeout=120):
    """Returns (status, body bytes); the body is read to its end (NDJSON streams too)."""
    c = UnixHTTPConnection(sock, timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        c.request(method, path, body=data, headers=headers)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def thin_http(sock, method, path, body=None, timeout=120):
    """The same request as http() with no more client than the raw peers have (one
    sendall, recv until Content-Length is in, no header parser): what the timed
    requests use unless --http-client stdlib, so that the overhead is the API's
    (daemon, libmicrohttpd, HTTP framing) and not Python's http.client."""
    data = b"" if body is None else json.dumps(body).encode()
    head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock)
        s.sendall(head.encode() + b"\r\n" + data)
        buf, need, hdr_end = b"", None, -1
        while need is None or len(buf) < need:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            if hdr_end < 0 and (hdr_end := buf.find(b"\r\n\r\n")) >= 0:
                headers = buf[:hdr_end].decode("latin-1").lower()
                if "transfer-encoding: chunked" in headers:
                    raise RuntimeError(f"{method} {path}: chunked answer (use --http-client stdlib)")
                length = [ln.split(":", 1)[1] for ln in headers.split("\r\n")
                          if ln.startswith("content-length:")]
                need = hdr_end + 4 + (int(length[0]) if length else 0)
    finally:
        s.close()
    if hdr_end < 0 or need is None or len(buf) < need:
        raise RuntimeError(f"{method} {path}: short answer {buf[:200]!r}")
    return int(buf.split(b" ", 2)[1]), buf[hdr_end + 4:need]


# Which client times the branch and spawn requests: "thin" (thin_http) or "stdlib"
# (http.client, as the SDK); set by --http-client.
HTTP_CLIENT = "thin"


def timed_api(sock, method, path, body=None, want=(200, 201)):
    if HTTP_CLIENT == "stdlib":
        return api(sock, method, path, body, want)
    status, data = thin_http(sock, method, path, body)
    if status not in want:
        raise RuntimeError(f"{method} {path}: {status} {data[:300]!r}")
    return json.loads(data) if data else None


def api(sock, method, path, body=None, want=(200, 201), timeout=120):
    status, data = http(sock, method, path, body, timeout)
    if status not in want:
        raise RuntimeError(f"{method} {path}: {status} {data[:300]!r}")
    return json.loads(data) if data else None


# ---- the VMM's control socket (docs/control.md) ----



def wait_gone(pid, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except (FileNotFoundError, ProcessLookupError):
            return
        time.sleep(0.002)


class Daemon:
    def __init__(self, base):
        self.state = os.path.join(base, "s")
        self.sock = os.path.join(base, "api.sock")
        self.log = open(os.path.join(base, "serve.log"), "w")
        self.audit = os.path.join(base, "audit.log")
        self.proc = subprocess.Popen(
            # --no-jail: the raw side drives the same VMMs through their control sockets
            # with directories of its own, which a jailed VMM cannot see. What the jail
            # costs a create, branch and spawn is bench/jail.sh's row, not this one's.
            [CLI, "serve", "--state-dir", self.state, "--socket", self.sock, "--vmm", VMM,
             "--audit-log", self.audit, "--no-jail"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                if http(self.sock, "GET", "/healthz", timeout=5)[0] == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"forkd serve did not answer on {self.sock} (see {self.log.name})")

    def server_ms(self, method, path):
        """The daemon's own latency_ms (audit log: first request byte to the answer sent)
        of each METHOD PATH request, in order."""
        out = []
        with open(self.audit) as f:
            for line in f:
                e = json.loads(line)
                if e["method"] == method and e["path"] == path:
                    out.append(e["latency_ms"])
        return out

    def stop(self):
        # Remove every VM (their VMMs outlive the daemon otherwise), then the daemon.
        try:
            for vm in api(self.sock, "GET", "/v1/vms")["vms"]:
                if vm.get("parent") is None:
                    http(self.sock, "DELETE", f"/v1/vms/{vm['id']}?cascade=true")
            for vm in api(self.sock, "GET", "/v1/vms")["vms"]:
                http(self.sock, "DELETE", f"/v1/vms/{vm['id']}?cascade=true")
        except Exception as e:  # keep going: the daemon still has to stop
            log(f"cleanup: {e}")
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def row(op, host, rawv, apiv, server=None, paired=None, **extra):
    """paired: the API's overhead per sample (spawn: that request's time less its own
    VMM's start), when there is one; overhead_ms_pXX is then its percentiles, and the
    difference of percentiles is kept as overhead_unpaired_ms_pXX."""
    if op in ("branch", "spawn"):
        extra = {"http_client": HTTP_CLIENT, **extra}
    out = {"bench": "api", "op": op, **host_fields(host), **extra, "samples": len(apiv),
           "raw_ms_p50": r3(pct(rawv, 50)), "raw_ms_p99": r3(pct(rawv, 99)),
           "api_ms_p50": r3(pct(apiv, 50)), "api_ms_p99": r3(pct(apiv, 99)),
           "overhead_ms_p50": r3(pct(apiv, 50) - pct(rawv, 50)),
           "overhead_ms_p99": r3(pct(apiv, 99) - pct(rawv, 99))}
    if paired:
        out["overhead"] = "paired"
        out["overhead_unpaired_ms_p50"] = out["overhead_ms_p50"]
        out["overhead_unpaired_ms_p99"] = out["overhead_ms_p99"]
        out["overhead_ms_p50"] = r3(pct(paired, 50))
        out["overhead_ms_p99"] = r3(pct(paired, 99))
    if server:
        server = server[-len(apiv):]  # without the warm-up
        out["server_ms_p50"] = r3(pct(server, 50))
        out["server_ms_p99"] = r3(pct(server, 99))
    emit(out)


def create_probe(d):
    return api(d.sock, "POST", "/v1/vms",
               {"kernel": PROBE, "mem_mib": 64, "append": "work=idle"})


# ---- branch ----

def bench_branch(d, base, samples, host):
    vm = create_probe(d)
    vid, ctl = vm["id"], vm["control_socket"]
    rawdir = os.path.join(base, "raw-branches")
    os.mkdir(rawdir)
    raw, apiv, raw_pause, api_pause, api_vmm = [], [], [], [], []
    for i in range(samples + 1):  # sample 0 of each: warm-up, not counted
        t0 = time.monotonic()
        res = timed_api(d.sock, "POST", f"/v1/vms/{vid}/branch", {"n": 1})
        t1 = time.monotonic()
        if i:
            apiv.append((t1 - t0) * 1000)
            api_pause.append(res["pause_us"])
            api_vmm.append(res["vmm_ms"])
        for c in res["children"]:
            api(d.sock, "DELETE", f"/v1/vms/{c['id']}?cascade=true")
            wait_gone(c["pid"])
        time.sleep(GAP_S)

        bdir = os.path.join(rawdir, str(i))
        t0 = time.monotonic()
        reply = call(ctl, {"cmd": "branch", "n": 1, "dir": bdir, "wait": True})
        t1 = time.monotonic()
        # Released after the timing, as the daemon does after answering (docs/daemon.md).
        call(ctl, {"cmd": "zygote", "action": "release", "id": reply["zygote"]})
        if i:
            raw.append((t1 - t0) * 1000)
            raw_pause.append(reply["pause_us"])
        for c in reply["children"]:
            call(os.path.join(c["dir"], "control.sock"), {"cmd": "shutdown"})
            wait_gone(c["pid"])
        shutil.rmtree(bdir, ignore_errors=True)
        time.sleep(GAP_S)
    # Paired as spawn's (below): each request's time less its own VMM branch call ("vmm_ms"
    # in the answer, the call the raw peer sends and times).
    row("branch", host, raw, apiv, d.server_ms("POST", f"/v1/vms/{vid}/branch"),
        paired=[a - v for a, v in zip(apiv, api_vmm)], vmm_ms_p50=r3(pct(api_vmm, 50)),
        vmm_ms_p99=r3(pct(api_vmm, 99)),
        mem_mib=64, guest="probe", raw_pause_us_p50=pct(raw_pause, 50),
        api_pause_us_p50=pct(api_pause, 50))
    api(d.sock, "DELETE", f"/v1/vms/{vid}?cascade=true")


# ---- spawn ----

class RawVmm:
    """A forkd-vmm started by os.posix_spawn (what the daemon does: no fork of this
    process, no Python-level child setup), in a session of its own."""

    def __init__(self, argv, err_path, ready_wr=-1):
        acts = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
                (os.POSIX_SPAWN_OPEN, 2, err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                 0o644)]
        if ready_wr >= 0:
            os.set_inheritable(ready_wr, True)  # only this descriptor crosses the exec
        self.pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=acts, setsid=True)
        self.status = None

    def poll(self):
        if self.status is None:
            pid, st = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = st
        return self.status

    def wait(self, timeout=10):
        end = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > end:
                os.kill(self.pid, 9)
                os.waitpid(self.pid, 0)
                raise RuntimeError(f"forkd-vmm {self.pid} did not exit within {timeout} s")
            time.sleep(0.002)


def raw_spawn(snap, vdir, ready_fd=False):
    """forkd-vmm --restore started directly (os.posix_spawn); done when its control socket
    answers status. Polled every 1 ms, or (ready_fd) asked once `--ready-fd` says its
    socket listens, as the daemon does."""
    os.mkdir(vdir)
    ctl = os.path.join(vdir, "control.sock")
    err = os.path.join(vdir, "vmm.err")
    argv = [VMM, "--restore", snap, "--overlay-dir", os.path.join(vdir, "overlay"),
            "--control", ctl, "--serial", os.path.join(vdir, "serial.log"), "--serial-in", "none"]
    rd = wr = -1
    if ready_fd:
        rd, wr = os.pipe()
        argv += ["--ready-fd", str(wr)]
    t0 = time.monotonic()
    proc = RawVmm(argv, err, wr)
    if ready_fd:
        os.close(wr)
        ready, _, _ = select.select([rd], [], [], 30)
        said = os.read(rd, 16) if ready else b""
        os.close(rd)
        if not said:
            raise RuntimeError(f"raw restore did not say ready (see {err})")
    end = t0 + 30
    while True:
        try:
            call(ctl, {"cmd": "status"}, timeout=1)
            break
        except (OSError, ValueError):
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"raw restore did not answer (see {err})")
            time.sleep(0.001)
    t1 = time.monotonic()
    return (t1 - t0) * 1000, proc, ctl


def bench_spawn(d, base, samples, host):
    vm = create_probe(d)
    api(d.sock, "POST", f"/v1/vms/{vm['id']}/snapshot", {"tag": "base"})
    snap = api(d.sock, "GET", "/v1/snapshots/base")["path"]
    raw_poll, raw_ready, apiv, vmm_start = [], [], [], []
    for i in range(samples + 1):
        t0 = time.monotonic()
        res = timed_api(d.sock, "POST", "/v1/snapshots/base/spawn", {"n": 1})
        t1 = time.monotonic()
        if i:
            apiv.append((t1 - t0) * 1000)
            vmm_start.append(res["vms"][0]["start_ms"])
        for v in res["vms"]:
            api(d.sock, "DELETE", f"/v1/vms/{v['id']}?cascade=true")
        time.sleep(GAP_S)

        for ready_fd, into in ((False, raw_poll), (True, raw_ready)):
            vdir = os.path.join(base, f"raw-spawn-{i}-{int(ready_fd)}")
            ms, proc, ctl = raw_spawn(snap, vdir, ready_fd)
            if i:
                into.append(ms)
            call(ctl, {"cmd": "shutdown"})
            proc.wait(timeout=10)
            shutil.rmtree(vdir, ignore_errors=True)
            time.sleep(GAP_S)
    # The raw peer is what a user would do by hand, done the best way: of the two ways of
    # waiting for the control socket to answer (told by --ready-fd, as the daemon is, or
    # polled every 1 ms), the one faster at p50 in this run ("raw" names it); both kept.
    best = "ready-fd" if pct(raw_ready, 50) <= pct(raw_poll, 50) else "poll-1ms"
    raw = raw_ready if best == "ready-fd" else raw_poll
    # A restore's own time moves in steps of the host's timer tick (KVM's memslot update waits
    # for an SRCU grace period, whose callback runs on a later jiffy: docs in RESULTS.md), so
    # two sets of 30 restores can differ at p50 by a whole tick whichever started them. The
    # overhead is therefore taken per request: its time less the time from the daemon
    # starting that request's VMM to its control socket answering ("start_ms" in the
    # answer: what the raw peer measures, the same way). vmm_start_ms_p50 against raw_ms_p50
    # shows both sides see the same VMM.
    paired = [a - v for a, v in zip(apiv, vmm_start)]
    row("spawn", host, raw, apiv, d.server_ms("POST", "/v1/snapshots/base/spawn"),
        paired=paired, vmm_start_ms_p50=r3(pct(vmm_start, 50)),
        vmm_start_ms_p99=r3(pct(vmm_start, 99)), mem_mib=64, guest="probe", raw=best,
        raw_ready_ms_p50=r3(pct(raw_ready, 50)), raw_ready_ms_p99=r3(pct(raw_ready, 99)),
        raw_poll_ms_p50=r3(pct(raw_poll, 50)), raw_poll_ms_p99=r3(pct(raw_poll, 99)),
        overhead_vs_ready_ms_p50=r3(pct(apiv, 50) - pct(raw_ready, 50)),
        overhead_vs_poll_ms_p50=r3(pct(apiv, 50) - pct(raw_poll, 50)))
    api(d.sock, "DELETE", f"/v1/vms/{vm['id']}?cascade=true")
    api(d.sock, "DELETE", "/v1/snapshots/base?cascade=true")


# ---- a GET alone: the HTTP floor (no raw peer) ----

def bench_get(d, samples, host):
    vm = create_probe(d)
    for path in ("/healthz", f"/v1/vms/{vm['id']}", "/v1/tree"):
        lat = []
        for i in range(samples + 1):
            t0 = time.monotonic()
            api(d.sock, "GET", path)
            if i:
                lat.append((time.monotonic() - t0) * 1000)
        server = d.server_ms("GET", path)[-samples:]
        emit({"bench": "api", "op": "get", **host_fields(host),
              "path": path.replace(vm["id"], "{id}"), "samples": samples,
              "api_ms_p50": r3(pct(lat, 50)), "api_ms_p99": r3(pct(lat, 99)),
              "server_ms_p50": r3(pct(server, 50)), "server_ms_p99": r3(pct(server, 99))})
    api(d.sock, "DELETE", f"/v1/vms/{vm['id']}?cascade=true")


# ---- concurrent ----

def bench_concurrent(d, n, host):
    target = create_probe(d)
    # A few branches, each on a VM of its own (a second branch of one VM would be refused busy).
    nbranch = max(1, n // 20)
    sources = [create_probe(d)["id"] for _ in range(nbranch)]
    jobs = []
    for i in range(n):
        if i % (n // nbranch) == 0 and len([j for j in jobs if j[0] == "POST"]) < nbranch:
            jobs.append(("POST", f"/v1/vms/{sources.pop()}/branch", {"n": 1}))
        elif i % 2:
            jobs.append(("GET", "/v1/tree", None))
        else:
            jobs.append(("GET", f"/v1/vms/{target['id']}", None))
    lat = [None] * n
    errors = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(n + 1)

    def worker(k):
        method, path, body = jobs[k]
        barrier.wait()
        t0 = time.monotonic()
        try:
            status, _ = http(d.sock, method, path, body, timeout=60)
            ok = 200 <= status < 300
        except Exception as e:
            log(f"concurrent {method} {path}: {e}")
            ok = False
        lat[k] = (time.monotonic() - t0) * 1000
        if not ok:
            with lock:
                errors[0] += 1

    with open(d.audit) as f:
        skip = len(f.readlines())
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.monotonic()
    for t in threads:
        t.join()
    wall = (time.monotonic() - t0) * 1000
    time.sleep(0.2)  # the audit line is written after the answer
    with open(d.audit) as f:
        lines = [json.loads(l) for l in f.readlines()[skip:]]
    server = [e["latency_ms"] for e in lines]
    # Per route inside the daemon: GET /v1/tree used to hold the daemon's lock for its whole
    # query and JSON; GET /v1/vms/{id} asks the VM's VMM for its state.
    tree_server = [e["latency_ms"] for e in lines if e["path"] == "/v1/tree"]
    vm_server = [e["latency_ms"] for e in lines
                 if e["method"] == "GET" and e["path"].startswith("/v1/vms/")]
    gets = [lat[k] for k in range(n) if jobs[k][0] == "GET"]
    posts = [lat[k] for k in range(n) if jobs[k][0] == "POST"]
    emit({"bench": "api", "op": "concurrent", "requests": n, "errors": errors[0],
          "p50_ms": r3(pct(lat, 50)), "p99_ms": r3(pct(lat, 99)), **host_fields(host),
          "gets": len(gets), "get_p50_ms": r3(pct(gets, 50)), "get_p99_ms": r3(pct(gets, 99)),
          "branches": len(posts), "branch_p50_ms": r3(pct(posts, 50)),
          "server_ms_p50": r3(pct(server, 50)), "server_ms_p99": r3(pct(server, 99)),
          "tree_server_ms_p50": r3(pct(tree_server, 50)),
          "tree_server_ms_p99": r3(pct(tree_server, 99)),
          "vm_get_server_ms_p50": r3(pct(vm_server, 50)), "wall_ms": round(wall, 1)})


# ---- exec (Linux guest with the agent) ----

FRAME = struct.Struct("<HBBI")
T_REQUEST, T_ERROR, T_EXIT = 1, 3, 8


def agent_exec(vsock, argv, timeout=60):
    """One exec over the agent protocol; returns the EXIT object."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(vsock)
        s.sendall(b"CONNECT 52\n")
        line = b""
        while not line.endswith(b"\n"):
            c = s.recv(1)
            if not c:
                raise ConnectionError("vsock closed before OK")
            line += c
        if not line.startswith(b"OK "):
            raise ConnectionError(f"vsock: {line!r}")
        req = json.dumps({"op": "exec", "argv": argv}).encode()
        s.sendall(FRAME.pack(0x4b46, 1, T_REQUEST, len(req)) + req)
        buf = b""
        while True:
            while len(buf) >= FRAME.size:
                magic, ver, typ, ln = FRAME.unpack_from(buf)
                if magic != 0x4b46 or ver != 1:
                    raise ConnectionError("agent: bad frame")
                if len(buf) < FRAME.size + ln:
                    break
                payload = buf[FRAME.size:FRAME.size + ln]
                buf = buf[FRAME.size + ln:]
                if typ == T_EXIT:
                    return json.loads(payload)
                if typ == T_ERROR:
                    raise RuntimeError(f"agent: {payload!r}")
            c = s.recv(65536)
            if not c:
                raise ConnectionError("agent closed the connection before EXIT")
            buf += c
    finally:
        s.close()


def api_exec(d, vid, argv):
    status, data = http(d.sock, "POST", f"/v1/vms/{vid}/exec", {"argv": argv}, timeout=120)
    lines = [json.loads(l) for l in data.splitlines() if l.strip()]
    if status != 200 or not lines or "exit" not in lines[-1]:
        raise RuntimeError(f"exec: {status} {data[:300]!r}")
    return lines[-1]


def bench_exec(d, samples, host):
    t0 = time.monotonic()
    vm = api(d.sock, "POST", "/v1/vms", {"image": IMAGE, "mem_mib": 512, "cpus": 1},
             timeout=300)
    vid, vsock = vm["id"], vm["vsock_socket"]
    end = time.monotonic() + 600
    while True:
        try:
            agent_exec(vsock, ["true"], timeout=30)
            break
        except (OSError, RuntimeError, ValueError) as e:
            if time.monotonic() > end:
                raise RuntimeError(f"the agent of {vid} did not answer: {e}")
            time.sleep(0.5)
    log(f"exec: {IMAGE} answering after {time.monotonic() - t0:.1f} s")
    raw, apiv = [], []
    for i in range(samples + 1):
        t0 = time.monotonic()
        r = api_exec(d, vid, ["true"])
        t1 = time.monotonic()
        if r.get("exit") != 0:
            raise RuntimeError(f"exec true through the API: {r}")
        if i:
            apiv.append((t1 - t0) * 1000)
        t0 = time.monotonic()
        r = agent_exec(vsock, ["true"])
        t1 = time.monotonic()
        if r.get("exit_code") != 0:
            raise RuntimeError(f"exec true through the agent: {r}")
        if i:
            raw.append((t1 - t0) * 1000)
    row("exec", host, raw, apiv, d.server_ms("POST", f"/v1/vms/{vid}/exec"),
        guest=IMAGE, raw="agent protocol from Python")
    api(d.sock, "DELETE", f"/v1/vms/{vid}?cascade=true")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("part", choices=["native", "exec"])
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--concurrent", type=int, default=200)
    ap.add_argument("--host", default=os.environ.get("FORKD_TESTHOST_KIND", "native"))
    ap.add_argument("--http-client", choices=["thin", "stdlib"], default="thin")
    a = ap.parse_args()
    global HTTP_CLIENT
    HTTP_CLIENT = a.http_client
    base = tempfile.mkdtemp(prefix="fk-api.", dir="/tmp")  # short: socket paths
    d = None
    try:
        d = Daemon(base)
        if a.part == "native":
            n = a.samples or 30
            log(f"branch: {n} samples each (API, raw alternating)")
            bench_branch(d, base, n, a.host)
            log(f"spawn: {n} samples each")
            bench_spawn(d, base, n, a.host)
            log("get: 100 sequential GETs of each of 3 routes")
            bench_get(d, 100, a.host)
            log(f"concurrent: {a.concurrent} requests")
            bench_concurrent(d, a.concurrent, a.host)
        else:
            n = a.samples or 50
            log(f"exec: {n} samples each")
            bench_exec(d, n, a.host)
    finally:
        if d:
            d.stop()
            # With FORKD_SERVE_TIMING=1 the daemon's log has each branch's and spawn's
            # spans (docs/daemon.md): keep it where FORKD_BENCH_SERVE_LOG says.
            if os.environ.get("FORKD_BENCH_SERVE_LOG"):
                shutil.copy(d.log.name, os.environ["FORKD_BENCH_SERVE_LOG"])
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
