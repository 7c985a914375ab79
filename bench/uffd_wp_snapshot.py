#!/usr/bin/env python3
"""Live snapshot: the fork engine against the uffd-wp engine, on the same source.

For each size and guest page size: a probe guest whose cpu0 runs the `pattern`
writer over SIZE MiB (a write load that touches all of it) and whose cpu1 runs
the `stall` probe. After the writer touched every page, RUNS live snapshots
with each engine, alternating, each waited for (`wait` true). Per snapshot: the
VMM's pause (vCPUs stopped), the guest-observed stall (the longest gap cpu1's
stall probe saw from the request until the snapshot was complete: the pause
plus, for uffd-wp, any write fault of its own), the time until the snapshot
was complete, and the writer's rate while the snapshot completed relative to
before (uffd-wp: every first write to a page is a fault copied first). Rows:
{"bench":"branch","op":"live-snapshot","engine":"fork"|"uffd-wp",...}.
"""
import json, os, shutil, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from control_call import call  # noqa: E402
from branch import (Console, emit, guest_mib, log, mem_available_mib, pct,  # noqa: E402
                    start_source, stop, STALL_US)

RUNS = int(os.environ.get("UFFD_WP_RUNS", "3"))
HEADROOM_MIB = 2048


def one_snapshot(con, sock, path, engine):
    con.command("stall-window\n", "stall-window.end")
    s0 = int(con.report()["cpu0.pattern_seq"]); ta = time.monotonic()
    time.sleep(0.2)
    s1 = int(con.report()["cpu0.pattern_seq"]); tb = time.monotonic()
    t0 = time.monotonic()
    reply = call(sock, {"cmd": "snapshot", "path": path, "mode": "live", "engine": engine},
                 timeout=600)
    t1 = time.monotonic()
    s2 = int(con.report()["cpu0.pattern_seq"])
    window = con.command("stall-window\n", "stall-window.end")
    if reply.get("snapshot") != "ready":
        raise RuntimeError(f"{engine} snapshot: {reply}")
    before = (s1 - s0) / (tb - ta)
    during = (s2 - s1) / (t1 - tb)
    return {"pause_us": reply["pause_us"],
            "stall_us": max(int(window.get("cpu1.stall_window_max_us", 0)), 0) or STALL_US,
            "complete_ms": (t1 - t0) * 1000,
            "rate": during / before if before > 0 else None,
            "faults": reply.get("faults"), "arm_us": reply.get("arm_us")}


def bench_size(workdir, mem_mib, pages, runs):
    # The touched RAM, the uffd-wp copy of it, and the page cache of the written file.
    need_mib = 2 * mem_mib + 512
    if mem_available_mib() < need_mib + HEADROOM_MIB:
        for engine in ("fork", "uffd-wp"):
            emit({"bench": "branch", "op": "live-snapshot", "engine": engine,
                  "mem_mib": mem_mib, "guest_pages": pages,
                  "error": f"not run: needs {need_mib} MiB plus {HEADROOM_MIB} MiB left to "
                           f"others, MemAvailable is {mem_available_mib()} MiB"})
        return
    append = (f"work=pattern,stall pattern_mib={mem_mib} stall_us={STALL_US} "
              f"pages={pages} pattern_freeze=genid")
    proc, con, sock = start_source(workdir, guest_mib(mem_mib), append)
    res = {"fork": [], "uffd-wp": []}
    try:
        pages_n = mem_mib * 256
        end = time.monotonic() + 600
        while time.monotonic() < end:
            if int(con.report().get("cpu0.pattern_seq", 0)) >= 2 * pages_n:
                break
            time.sleep(0.5)
        for i in range(runs):
            for engine in ("fork", "uffd-wp"):
                path = os.path.join(workdir, f"s{mem_mib}{pages}{engine}{i}")
                res[engine].append(one_snapshot(con, sock, path, engine))
                shutil.rmtree(path, ignore_errors=True)
    finally:
        stop(proc, sock)
    for engine, rs in res.items():
        stall = [r["stall_us"] for r in rs]
        emit({"bench": "branch", "op": "live-snapshot", "engine": engine,
              "mem_mib": mem_mib, "guest_pages": pages, "runs": len(rs),
              "pause_us_p50": pct([r["pause_us"] for r in rs], 50),
              "guest_stall_us_p50": pct(stall, 50), "guest_stall_us_p90": pct(stall, 90),
              "guest_stall_us_p99": pct(stall, 99), "guest_stall_us_max": max(stall),
              "complete_ms_p50": round(pct([r["complete_ms"] for r in rs], 50), 1),
              "writer_rate_during_over_before_p50":
                  round(pct([r["rate"] for r in rs if r["rate"] is not None], 50), 3),
              "arm_us_p50": pct([r["arm_us"] for r in rs if r["arm_us"] is not None], 50),
              "wp_faults_p50": pct([r["faults"] for r in rs if r["faults"] is not None], 50)})


def main():
    sizes = [int(x) for x in (sys.argv[1] if len(sys.argv) > 1 else "256 1024 4096").split()]
    page_sizes = (sys.argv[2] if len(sys.argv) > 2 else "2m 4k").split()
    workdir = tempfile.mkdtemp(prefix="forkd-bench-uffd-wp.", dir="/var/tmp")
    try:
        for mem in sizes:
            for pages in page_sizes:
                log(f"live snapshot, fork vs uffd-wp: {mem} MiB, {pages} guest pages")
                try:
                    bench_size(workdir, mem, pages, RUNS)
                except Exception as e:
                    emit({"bench": "branch", "op": "live-snapshot", "mem_mib": mem,
                          "guest_pages": pages, "error": str(e)})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
