#!/usr/bin/env python3
"""Zygote pool benchmark: child ready time with and without prebuilt children.

For each guest size: a probe guest (2 vCPUs, idle) is branched into a zygote
with no pool (`branch n=1`, its child shut down) and into one with `pool: 1`.
Each sample is one `zygote spawn n=1`; "child ready" is the time from sending
the spawn request to the child answering `status` on its own control socket
(`p50_ms`), and to its guest answering `ping` on its console (`ping_p50_ms`:
the guest runs). Pooled samples wait until the pool is ready again first.
Also the idle cost of a parked pooled child (/proc/PID/smaps_rollup: RSS, PSS
and USS = private pages; its guest RAM is shared copy-on-write with the
zygote, so PSS splits the zygote's pages with it while USS is what it adds). JSON lines on
stdout.
"""
import json, os, shutil, socket, statistics, subprocess, sys, tempfile, time
from control_call import call  # bench/ is sys.path[0] when run as python3 bench/X.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VMM = os.path.join(ROOT, "build", "forkd-vmm")
PROBE = os.path.join(ROOT, "build", "guest", "probe.elf")
# The guest's work: idle by default; e.g. "work=pattern pattern_mib=64" for a touched working set.
WORK = os.environ.get("POOL_WORK", "work=idle")


def emit(obj):
    print(json.dumps(obj), flush=True)




def wait_ping(child_dir, timeout=30):
    with open(os.path.join(child_dir, "serial.in"), "w") as fifo:
        fifo.write("ping\n")
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with open(os.path.join(child_dir, "serial.log")) as f:
            if "pong\n" in f.read():
                return True
        time.sleep(0.0002)
    return False


def zygote(sock, zid):
    for z in call(sock, {"cmd": "zygote", "action": "list"})["zygotes"]:
        if z["zygote"] == zid:
            return z
    raise RuntimeError(f"zygote {zid} is gone")


def wait_pool_ready(sock, zid, want, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        z = zygote(sock, zid)
        if z["pool_ready"] >= want:
            return
        if z.get("pool_error"):
            raise RuntimeError("pool: " + z["pool_error"])
        time.sleep(0.01)
    raise TimeoutError("pool never refilled")


def smaps(pid):
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Rss", "Pss", "Pss_Anon", "Private_Clean", "Private_Dirty"):
                out[k] = int(v.split()[0])
    return out


def sample(sock, zid):
    t0 = time.monotonic()
    r = call(sock, {"cmd": "zygote", "action": "spawn", "id": zid, "n": 1})
    child = r["children"][0]["dir"]
    csock = os.path.join(child, "control.sock")
    call(csock, {"cmd": "status"})
    ready = (time.monotonic() - t0) * 1000
    if not wait_ping(child):
        raise RuntimeError(f"{child}: no pong")
    ping = (time.monotonic() - t0) * 1000
    call(csock, {"cmd": "shutdown"})
    return ready, ping


def bench_size(workdir, mem_mib, samples):
    sock = os.path.join(workdir, f"src{mem_mib}.sock")
    proc = subprocess.Popen(
        [VMM, "--kernel", PROBE, "--mem", f"{mem_mib}M", "--cpus", "2",
         "--append", WORK, "--control", sock],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 30
        while not os.path.exists(sock) and time.monotonic() < end:
            time.sleep(0.01)
        time.sleep(0.3)
        for pool in (False, True):
            req = {"cmd": "branch", "dir": os.path.join(workdir, f"b{mem_mib}{int(pool)}")}
            req.update({"n": 0, "pool": 1} if pool else {"n": 1})
            r = call(sock, req)
            zid = r["zygote"]
            if not pool:
                call(os.path.join(r["children"][0]["dir"], "control.sock"), {"cmd": "shutdown"})
            ready, ping = [], []
            for _ in range(samples):
                if pool:
                    wait_pool_ready(sock, zid, 1)
                    time.sleep(0.05)  # the refill's own work is over
                a, b = sample(sock, zid)
                ready.append(a)
                ping.append(b)
                time.sleep(0.05)
            extra = {}
            if pool:
                wait_pool_ready(sock, zid, 1)
                time.sleep(0.3)  # the shut-down children are gone
                zpid = zygote(sock, zid)["pid"]
                with open(f"/proc/{zpid}/task/{zpid}/children") as f:
                    kids = [int(p) for p in f.read().split()]
                # The parked one is the zygote's only live child (the others were shut down).
                parked = [m for m in (smaps(p) for p in kids) if "Rss" in m]
                if parked:
                    extra = {"parked_rss_kib": parked[0]["Rss"], "parked_pss_kib": parked[0]["Pss"],
                             "parked_pss_anon_kib": parked[0]["Pss_Anon"],
                             # USS: what ending the parked child would free (not shared)
                             "parked_uss_kib": parked[0]["Private_Clean"] +
                             parked[0]["Private_Dirty"]}
            call(sock, {"cmd": "zygote", "action": "release", "id": zid})
            # The row: {"bench":"branch-pool","child_ready_ms_p50":...} (pool 0: none).
            emit({"bench": "branch-pool", "op": "child_ready", "pool": pool, "mem_mib": mem_mib,
                  "samples": samples, "child_ready_ms_p50": round(statistics.median(ready), 3),
                  "p50_ms": round(statistics.median(ready), 3),
                  "min_ms": round(min(ready), 3), "max_ms": round(max(ready), 3),
                  "ping_p50_ms": round(statistics.median(ping), 3), "kvm": "native-pvm", "work": WORK,
                  **extra})
    finally:
        try:
            call(sock, {"cmd": "shutdown"}, timeout=10)
        except Exception:
            proc.kill()
        proc.wait(timeout=30)


def main():
    sizes = [int(x) for x in (sys.argv[1] if len(sys.argv) > 1 else "256 1024").split()]
    samples = int(os.environ.get("SAMPLES", "20"))
    workdir = tempfile.mkdtemp(prefix="forkd-bench-pool-")
    try:
        for mem in sizes:
            bench_size(workdir, mem, samples)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
