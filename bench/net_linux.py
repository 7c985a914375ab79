#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Linux-guest networking, measured (bench/net.sh --linux runs this).

A Debian-kernel guest with our initramfs and agent, under forkd-vmm
--net-policy host: its eth0 is configured by forkd-init from forkd.net=
(docs/networking.md). JSON lines on stdout, progress on stderr:

  tcp_throughput  the guest sends SIZE MiB (dd | busybox nc) to a server this
                  script runs at the VM's host-side address (10.200.S.1),
                  reached by the guest at its gateway 172.16.0.1; mib_s from
                  the first byte to EOF at the server.
  tcp_rtt         one byte each way, RUNS times, over one connection from this
                  script to 10.200.S.2 (DNATed to the guest), where busybox nc
                  runs cat; p50_us/p99_us.
  branch          BRANCH of 1 child, BRANCHES times, from a VM with policy host
                  (net=true: the child makes its own namespace before it runs)
                  and one with policy none (net=false): pause_us_p50 is the
                  source's pause (the branch reply's pause_us); child_ready_ms_p50
                  from the request to the child's agent answering ping with its
                  fork notification applied.

Every row carries "host" (native, or nested-tcg / nested-kvm inside the nested
test host, then also "tcg":true for TCG). Traffic only to the addresses of the
namespaces forkd-vmm made for these VMs; every wait is bounded.

  bench/net_linux.py --vmm V --forkd F --images DIR [--runs N] [--branches N] [--mib N]
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

AGENT_PORT = 52
BOOT_S = 240
GUEST_NET = "forkd.net=172.16.0.2/30,gw=172.16.0.1"
HOST_PORT = 7071
ECHO_PORT = 9000


def say(*a):
    print("net_linux:", *a, file=sys.stderr, flush=True)


def frame(ftype, payload=b""):
    return struct.pack("<HBBI", 0x4B46, 1, ftype, len(payload)) + payload


def read_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("agent closed the connection")
        buf += chunk
    return buf


def read_frame(s):
    magic, ver, ftype, length = struct.unpack("<HBBI", read_exact(s, 8))
    if magic != 0x4B46 or ver != 1:
        raise ValueError("not an agent frame")
    return ftype, read_exact(s, length)


def agent_conn(uds, timeout=20):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(uds)
    s.sendall(b"CONNECT %d\n" % AGENT_PORT)
    line = b""
    while not line.endswith(b"\n"):
        c = s.recv(1)
        if not c:
            raise EOFError("vsock closed before OK")
        line += c
    if not line.startswith(b"OK"):
        raise ConnectionError(line.decode(errors="replace").strip())
    return s


def agent_ping(uds):
    with agent_conn(uds, 5) as s:
        s.sendall(frame(1, json.dumps({"op": "ping"}).encode()))
        ftype, body = read_frame(s)
        if ftype != 2:
            raise ConnectionError("ping: frame type %d" % ftype)
        return json.loads(body)


def agent_sh(uds, script, timeout=300):
    """sh -c script in the guest; (exit code, stdout)."""
    with agent_conn(uds, timeout) as s:
        s.sendall(frame(1, json.dumps({"op": "exec", "argv": ["/bin/sh", "-c", script]}).encode()))
        out = b""
        while True:
            ftype, body = read_frame(s)
            if ftype == 6:
                out += body
            elif ftype == 8:
                r = json.loads(body)
                return r.get("exit_code", -1), out.decode(errors="replace")
            elif ftype == 3:
                raise RuntimeError("exec: %s" % body.decode(errors="replace"))


def wait_ready(uds, deadline_s, want_forked=False):
    end = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < end:
        try:
            p = agent_ping(uds)
            if not (want_forked and p.get("fork_pending")):
                return
        except (OSError, EOFError, ConnectionError, ValueError) as e:
            last = e
        time.sleep(0.005)
    raise TimeoutError("agent at %s not ready within %d s (%s)" % (uds, deadline_s, last))


def vm_call(forkd, sock, req):
    r = subprocess.run([forkd, "vm", "call", "--socket", sock, "--timeout", "120000", json.dumps(req)],
                       capture_output=True, text=True, timeout=180)
    if r.returncode != 0:
        raise RuntimeError("forkd vm call %s: %s" % (req, r.stderr.strip()))
    return json.loads(r.stdout)


class VM:
    def __init__(self, args, policy, tag):
        self.dir = tempfile.mkdtemp(prefix="forkd-bench-netlinux-%s." % tag)
        self.vsock = os.path.join(self.dir, "vsock.sock")
        self.control = os.path.join(self.dir, "control.sock")
        self.log = open(os.path.join(self.dir, "console"), "w")
        self.proc = subprocess.Popen(
            [args.vmm, "--kernel", os.path.join(args.images, "vmlinux"), "--initrd",
             os.path.join(args.images, "initramfs.cpio"), "--mem", "512M", "--cpus", "1",
             "--vsock", self.vsock, "--control", self.control, "--serial-in", "none",
             "--net-policy", policy, "--append", "console=ttyS0 quiet forkd.agent=1 " + GUEST_NET],
            stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_ready(self.vsock, BOOT_S)
        except Exception:
            self.proc.kill()
            self.proc.wait()
            with open(os.path.join(self.dir, "console")) as f:
                say("the VM never answered; its console:\n" + f.read()[-3000:])
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def close(self, forkd):
        try:
            vm_call(forkd, self.control, {"cmd": "shutdown"})
            self.proc.wait(timeout=120)
        except Exception:  # noqa: BLE001 -- a bench must not leave a VMM behind
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def bench_throughput(vm, root_addr, mib, host):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((root_addr, HOST_PORT))
    srv.listen(1)
    srv.settimeout(120)
    result = {}

    def receive():
        c, _ = srv.accept()
        c.settimeout(120)
        got, t0 = 0, None
        while True:
            d = c.recv(1 << 20)
            if t0 is None:
                t0 = time.monotonic()
            if not d:
                break
            got += len(d)
        result["dt"] = time.monotonic() - t0
        result["bytes"] = got
        c.close()

    t = threading.Thread(target=receive)
    t.start()
    code, _ = agent_sh(vm.vsock, "dd if=/dev/zero bs=65536 count=%d 2>/dev/null | nc 172.16.0.1 %d"
                       % (mib * 16, HOST_PORT))
    t.join(130)
    srv.close()
    if code != 0 or result.get("bytes") != mib << 20:
        raise RuntimeError("throughput: nc exit %d, server got %s bytes of %d"
                           % (code, result.get("bytes"), mib << 20))
    return {"bench": "net", "op": "tcp_throughput", **host, "guest": "linux",
            "dir": "guest_to_host", "mib": mib, "mib_s": round(mib / result["dt"], 1)}


def bench_rtt(vm, guest_addr, runs, host):
    # In a session of its own (the agent kills the exec's process group when it
    # ends), and only once setsid is done: its session id is its pid.
    code, _ = agent_sh(vm.vsock, "setsid nc -ll -p %d -e cat </dev/null >/dev/null 2>&1 & p=$!; i=0; "
                       "while [ $i -lt 200 ] && [ \"$(cut -d' ' -f6 /proc/$p/stat)\" != $p ]; do "
                       "sleep 0.05; i=$((i+1)); done; [ \"$(cut -d' ' -f6 /proc/$p/stat)\" = $p ]"
                       % ECHO_PORT)
    if code != 0:
        raise RuntimeError("rtt: starting the guest's echo server failed")
    end = time.monotonic() + 60
    while True:
        try:
            s = socket.create_connection((guest_addr, ECHO_PORT), 5)
            break
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(10)
    times = []
    for i in range(runs + 5):
        t0 = time.monotonic()
        s.sendall(b"x")
        if s.recv(1) != b"x":
            raise RuntimeError("rtt: echo lost")
        if i >= 5:  # the first round trips warm ARP, conntrack and cat
            times.append((time.monotonic() - t0) * 1e6)
    s.close()
    return {"bench": "net", "op": "tcp_rtt", **host, "guest": "linux", "runs": runs,
            "p50_us": round(pct(times, 0.5)), "p99_us": round(pct(times, 0.99))}


def bench_branch(args, policy, host):
    vm = VM(args, policy, "branch-" + policy)
    pauses, ready = [], []
    try:
        for b in range(args.branches):
            bdir = os.path.join(vm.dir, "branch-%d" % b)
            t0 = time.monotonic()
            reply = vm_call(args.forkd, vm.control, {"cmd": "branch", "n": 1, "dir": bdir})
            kid = os.path.join(bdir, "child-0")
            wait_ready(os.path.join(kid, "vsock.sock"), 120, want_forked=True)
            ready.append((time.monotonic() - t0) * 1000)
            pauses.append(reply["pause_us"])
            vm_call(args.forkd, os.path.join(kid, "control.sock"), {"cmd": "shutdown"})
    finally:
        vm.close(args.forkd)
    return {"bench": "net", "op": "branch", **host, "guest": "linux", "net": policy != "none",
            "policy": policy, "branches": args.branches,
            "pause_us_p50": round(statistics.median(pauses)),
            "child_ready_ms_p50": round(statistics.median(ready), 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vmm", required=True)
    ap.add_argument("--forkd", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--branches", type=int, default=5)
    ap.add_argument("--mib", type=int, default=32)
    args = ap.parse_args()
    if not 1 <= args.runs <= 100000 or not 1 <= args.branches <= 100 or not 1 <= args.mib <= 4096:
        ap.error("--runs 1..100000, --branches 1..100, --mib 1..4096")
    kind = os.environ.get("FORKD_TESTHOST_KIND", "")
    host = {"host": "nested", "tcg": True} if kind == "nested-tcg" else \
        {"host": "nested", "tcg": False} if kind == "nested-kvm" else {"host": "native"}

    vm = VM(args, "host", "tcp")
    try:
        st = vm_call(args.forkd, vm.control, {"cmd": "status"})
        guest_addr = st["net_host_addr"]
        # The slot's /30: the guest's host-side address is .2 in it, the root end .1.
        root_addr = socket.inet_ntoa(struct.pack("!I", struct.unpack("!I", socket.inet_aton(guest_addr))[0] - 1))
        say("VM up, reached at", guest_addr)
        print(json.dumps(bench_throughput(vm, root_addr, args.mib, host)), flush=True)
        print(json.dumps(bench_rtt(vm, guest_addr, args.runs, host)), flush=True)
    finally:
        vm.close(args.forkd)
    for policy in ("host", "none"):
        print(json.dumps(bench_branch(args, policy, host)), flush=True)


if __name__ == "__main__":
    main()
