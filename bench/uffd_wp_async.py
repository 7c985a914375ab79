"""Live snapshot benchmark, engine uffd-wp-async beside the fork engine, same guest, same run.

For each size: a 2-vCPU probe guest whose cpu0 writes its pattern over mem_mib (pages
`pages`, as bench/branch.py) and whose cpu1 runs the stall probe. Once the writer has
touched every page, RUNS live snapshots with each engine, alternating:
  - "uffd-wp-async": WP_ASYNC pre-copy rounds, then one final pause
    (src/state/live_async.c); the snapshot is the VM at that final pause;
  - "fork": the default live snapshot (a persisted BRANCH: pause, capture, fork; the
    zygote writes), the snapshot is the VM at the request.
Per snapshot: the VMM's pause, the guest-observed stall (the longest gap cpu1's stall
probe saw across the whole snapshot, from request to complete), and the time from the
request until the snapshot is ready (complete_ms). uffd-wp-async rows also carry the
pre-copy rounds and the dirty pages copied in the final pause. JSON lines on stdout:
  {"bench":"branch","engine":"uffd-wp-async"|"fork","op":"live-snapshot","mem_mib":N,...}
"""
import os, shutil, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from branch import (Console, STALL_US, call, emit, guest_mib, log, mem_available_mib, pct,
                    start_source, stop)

RUNS = int(os.environ.get("ASYNC_RUNS", "3"))
HEADROOM_MIB = 2048


def wait_touched(con, mem_mib):
    pages_n = mem_mib * 256
    end = time.monotonic() + 600
    while time.monotonic() < end:
        r = con.report()
        if int(r.get("cpu0.pattern_seq", 0)) >= 2 * pages_n:
            return
        time.sleep(0.5)
    raise TimeoutError("the writer did not touch its memory in 600 s")


def one_snapshot(con, sock, path, engine):
    con.command("stall-window\n", "stall-window.end")
    t0 = time.monotonic()
    req = {"cmd": "snapshot", "path": path, "mode": "live"}
    if engine != "fork":
        req["engine"] = engine
    reply = call(sock, req, timeout=600)
    # wait true: the reply comes once the snapshot is complete, for both engines.
    complete_ms = (time.monotonic() - t0) * 1000
    window = con.command("stall-window\n", "stall-window.end")
    stall = int(window.get("cpu1.stall_window_max_us", 0)) or STALL_US
    shutil.rmtree(path, ignore_errors=True)
    return reply, stall, complete_ms


def bench_size(workdir, mem_mib, pages):
    gmib = guest_mib(mem_mib)
    # The guest's touched RAM, plus the page cache of a staging copy and a snapshot.
    need = mem_mib + 256
    if mem_available_mib() < need + HEADROOM_MIB:
        for engine in ("uffd-wp-async", "fork"):
            emit({"bench": "branch", "engine": engine, "op": "live-snapshot", "mem_mib": mem_mib,
                  "guest_pages": pages,
                  "error": f"not run: needs {need} MiB plus {HEADROOM_MIB} MiB, MemAvailable "
                           f"is {mem_available_mib()} MiB"})
        return
    append = (f"work=pattern,stall pattern_mib={mem_mib} stall_us={STALL_US} "
              f"pages={pages} pattern_freeze=genid")
    proc, con, sock = start_source(workdir, gmib, append)
    rows = {e: {"pause": [], "stall": [], "complete": [], "rounds": [], "dirty": [],
                "park": [], "failed": 0} for e in ("uffd-wp-async", "fork")}
    try:
        wait_touched(con, mem_mib)
        for i in range(RUNS):
            for engine in ("uffd-wp-async", "fork"):
                path = os.path.join(workdir, f"snap-{mem_mib}-{pages}-{engine}-{i}")
                try:
                    reply, stall, complete_ms = one_snapshot(con, sock, path, engine)
                except Exception as e:  # a failed snapshot is counted, not hidden
                    log(f"{engine} {mem_mib} MiB run {i}: {e}")
                    rows[engine]["failed"] += 1
                    continue
                r = rows[engine]
                r["pause"].append(reply["pause_us"])
                r["park"].append(reply.get("park_us", 0))
                r["stall"].append(stall)
                r["complete"].append(complete_ms)
                if engine == "uffd-wp-async":
                    r["rounds"].append(reply["rounds"])
                    r["dirty"].append(reply["final_dirty_pages"])
                time.sleep(0.5)
    finally:
        stop(proc, sock)
    for engine, r in rows.items():
        row = {"bench": "branch", "engine": engine, "op": "live-snapshot", "mem_mib": mem_mib,
               "guest_mib": gmib, "guest_pages": pages, "runs": len(r["pause"]),
               "failed": r["failed"],
               "pause_us_p50": pct(r["pause"], 50), "park_us_p50": pct(r["park"], 50),
               "guest_stall_us_p50": pct(r["stall"], 50),
               "guest_stall_us_max": max(r["stall"]) if r["stall"] else None,
               "complete_ms_p50": round(pct(r["complete"], 50), 1) if r["complete"] else None}
        if engine == "uffd-wp-async":
            row["rounds_p50"] = pct(r["rounds"], 50)
            row["final_dirty_pages_p50"] = pct(r["dirty"], 50)
        emit(row)


def main():
    sizes = [int(x) for x in (sys.argv[1] if len(sys.argv) > 1 else "256 1024 4096").split()]
    page_sizes = (sys.argv[2] if len(sys.argv) > 2 else "4k").split()
    # On disk, not /dev/shm: the staging copy and the snapshot are each as big as the RAM.
    workdir = tempfile.mkdtemp(prefix="forkd-bench-async.", dir=os.environ.get("TMPDIR", "/var/tmp"))
    try:
        for mem in sizes:
            for pages in page_sizes:
                log(f"live snapshots, {mem} MiB, {pages} guest pages: uffd-wp-async vs fork")
                bench_size(workdir, mem, pages)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
