#!/usr/bin/env python3
"""BRANCH benchmark (fork engine), driven through forkd-vmm's control socket.

For each guest size and page size: a probe guest whose cpu0 runs the `pattern`
writer over SIZE MiB (a write load that touches all of it) and whose cpu1 runs
the `stall` probe; 20 branches of one child each. Per branch it records the
VMM's phases (pause, park, capture, fork), the guest-observed stall (the
longest gap the stall probe saw around the branch), and the time until the
child answers on its console. Prints one JSON object per line.

BRANCH_BACKENDS (default "anon") picks the host backing of guest RAM per row:
anon (transparent huge pages, re-collapsed after each release) and/or hugetlb
(`--mem-backend hugetlb`: the bench raises /proc/sys/vm/nr_hugepages for that
row only and gives the pages back after it). BRANCH_PARTS (default
"branch qemu fanout") picks the parts.

Also: 100 children from one zygote (all answering, PSS per child), the source's
write rate in the 200 ms after a branch relative to before, and QEMU's
background-snapshot stall for the same guest ELF (BRANCH_QEMU_SIZES, its RAM
written to /dev/null), with QEMU's own downtime. A row whose host memory is not
available (MemAvailable less 2 GiB for others) is an "error" row saying so.
"""
import json, os, shutil, socket, statistics, subprocess, sys, tempfile, time
from control_call import call  # bench/ is sys.path[0] when run as python3 bench/X.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VMM = os.path.join(ROOT, "build", "forkd-vmm")
PROBE = os.path.join(ROOT, "build", "guest", "probe.elf")
STALL_US = 200
INTERVAL_MS = int(os.environ.get("BRANCH_INTERVAL_MS", "1000"))


def emit(obj):
    print(json.dumps(obj), flush=True)


def log(msg):
    print("bench/branch: " + msg, file=sys.stderr, flush=True)




def pct(values, p):
    v = sorted(values)
    if not v:
        return None
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


class Console:
    """The source's console on pipes: send lines, wait for key=value lines."""

    def __init__(self, proc):
        self.proc = proc
        self.lines = []
        os.set_blocking(proc.stdout.fileno(), False)
        self.partial = b""

    def pump(self):
        try:
            data = os.read(self.proc.stdout.fileno(), 1 << 16)
        except BlockingIOError:
            return
        self.partial += data
        *done, self.partial = self.partial.split(b"\n")
        self.lines += [l.decode(errors="replace") for l in done]

    def send(self, text):
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def wait(self, prefix, timeout=60, start=0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.pump()
            for i in range(start, len(self.lines)):
                if self.lines[i].startswith(prefix):
                    return i, self.lines[i]
            time.sleep(0.002)
        raise TimeoutError(prefix)

    def report(self):
        return self.command("report\n", "report.end")

    def command(self, text, end_prefix):
        start = len(self.lines)
        self.send(text)
        end, _ = self.wait(end_prefix, start=start)
        values = {}
        for line in self.lines[start:end]:
            for tok in line.split():
                if "=" in tok:
                    k, v = tok.split("=", 1)
                    values[k] = v
        return values


HUGETLB_SYSFS = "/sys/kernel/mm/hugepages/hugepages-2048kB/"


def hugetlb_read(name):
    with open(HUGETLB_SYSFS + name) as f:
        return int(f.read())


def hugetlb_set_pool(pages):
    """Sets the 2 MiB hugetlb pool to pages; returns how many the kernel gave."""
    with open(HUGETLB_SYSFS + "nr_hugepages", "w") as f:
        f.write(str(pages))
    return hugetlb_read("nr_hugepages")


def hugetlb_pages_needed(mem_mib):
    """The source reserves its whole RAM; the copies its writes make while a zygote shares
    it, and the child's own writes, come on top: up to 1 GiB of them (the writer cycles
    through small regions within a branch, not through 16 GiB)."""
    return guest_mib(mem_mib) // 2 + min(mem_mib // 2, 512) + 32


def start_source(workdir, mem_mib, append, backend="anon"):
    sock = os.path.join(workdir, "source.sock")
    proc = subprocess.Popen(
        [VMM, "--kernel", PROBE, "--mem", f"{mem_mib}M", "--cpus", "2",
         "--mem-backend", backend, "--append", append, "--control", sock],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    con = Console(proc)
    con.wait("READY", timeout=60)
    return proc, con, sock


def stop(proc, sock):
    try:
        call(sock, {"cmd": "shutdown"}, timeout=10)
    except Exception:
        proc.kill()
    proc.wait(timeout=30)


def child_ping(child_dir, timeout=30):
    """Sends ping to a child's console FIFO; returns when its log shows pong."""
    log_path = os.path.join(child_dir, "serial.log")
    with open(os.path.join(child_dir, "serial.in"), "w") as fifo:
        fifo.write("ping\n")
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with open(log_path) as f:
            if "pong\n" in f.read():
                return True
        time.sleep(0.0005)
    return False


def guest_mib(mem_mib):
    """Guest RAM for a pattern region of mem_mib: the probe needs it contiguous, and RAM
    splits at 3 GiB, so large regions go above 4 GiB in a guest with 3 GiB below."""
    return mem_mib + 512 if mem_mib <= 2560 else 3072 + mem_mib + 256


def anon_huge_mib(pid):
    """AnonHugePages of a process: RAM still mapped by 2 MiB entries (THP)."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("AnonHugePages:"):
                return int(line.split()[1]) // 1024
    return 0


def mem_available_mib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    return 0


# Host memory left to other processes (other tests, builds) while a row runs.
HEADROOM_MIB = 2048


def bench_size(workdir, mem_mib, pages, branches, backend="anon"):
    # What the row takes from the host: the touched RAM and copies (anon), or the pool.
    need_mib = (2 * hugetlb_pages_needed(mem_mib) if backend == "hugetlb"
                else mem_mib + min(mem_mib, 1024) + 256)
    if mem_available_mib() < need_mib + HEADROOM_MIB:
        emit({"bench": "branch", "engine": "fork", "mem_mib": mem_mib, "guest_pages": pages,
              "mem_backend": backend,
              "error": f"not run: needs {need_mib} MiB plus {HEADROOM_MIB} MiB left to others, "
                       f"MemAvailable is {mem_available_mib()} MiB"})
        return
    if backend == "hugetlb":
        want = hugetlb_pages_needed(mem_mib)
        pool_before = hugetlb_read("nr_hugepages")
        got = hugetlb_set_pool(want)
        if got < want:
            hugetlb_set_pool(pool_before)
            emit({"bench": "branch", "engine": "fork", "mem_mib": mem_mib, "guest_pages": pages,
                  "mem_backend": backend,
                  "error": f"the kernel gave {got} of {want} 2 MiB huge pages (memory in use)"})
            return
        try:
            bench_size_run(workdir, mem_mib, pages, branches, backend)
        finally:
            hugetlb_set_pool(pool_before)
    else:
        bench_size_run(workdir, mem_mib, pages, branches, backend)


def bench_size_run(workdir, mem_mib, pages, branches, backend):
    append = (f"work=pattern,stall pattern_mib={mem_mib} stall_us={STALL_US} "
              f"pages={pages} pattern_freeze=genid")
    proc, con, sock = start_source(workdir, guest_mib(mem_mib), append, backend)
    pause, park, capture, fork_, stall, ready, dips = [], [], [], [], [], [], []
    huge_before, hugetlb_free_min = [], None
    try:
        # Let the writer touch every page once (fresh host memory is slow to fault in).
        pages_n = mem_mib * 256
        end = time.monotonic() + 600
        while time.monotonic() < end:
            r = con.report()
            if any(k.endswith(".error") for k in r) or any("error" in l for l in con.lines):
                raise RuntimeError("guest workload failed: " +
                                   "; ".join(l for l in con.lines if "error" in l))
            if int(r.get("cpu0.pattern_seq", 0)) >= 2 * pages_n:
                break
            time.sleep(0.5)
        for i in range(branches):
            huge_before.append(anon_huge_mib(proc.pid))
            con.command("stall-window\n", "stall-window.end")
            t0 = time.monotonic()
            reply = call(sock, {"cmd": "branch", "n": 1,
                                "dir": os.path.join(workdir, f"b{mem_mib}{pages}{backend}{i}")})
            child = reply["children"][0]["dir"]
            if child_ping(child):
                ready.append((time.monotonic() - t0) * 1000)
            time.sleep(0.05)
            if backend == "hugetlb":
                free = hugetlb_read("free_hugepages") - hugetlb_read("resv_hugepages")
                hugetlb_free_min = free if hugetlb_free_min is None else min(free,
                                                                              hugetlb_free_min)
            window = con.command("stall-window\n", "stall-window.end")
            stall.append(max(int(window.get("cpu1.stall_window_max_us", 0)), 0) or STALL_US)
            pause.append(reply["pause_us"])
            park.append(reply["park_us"])
            capture.append(reply["capture_us"])
            fork_.append(reply["fork_us"])
            call(os.path.join(child, "control.sock"), {"cmd": "shutdown"})
            call(sock, {"cmd": "zygote", "action": "release", "id": reply["zygote"]})
            shutil.rmtree(os.path.dirname(child), ignore_errors=True)
            # Time between branches: the source re-collapses its RAM into huge pages after a
            # release (src/branch/recollapse.c); back-to-back branches (0) leave it split.
            time.sleep(INTERVAL_MS / 1000.0)
        # Source write-throughput dip: rate in the 200 ms after a branch / rate before.
        for i in range(3):
            s0 = int(con.report()["cpu0.pattern_seq"]); ta = time.monotonic()
            time.sleep(0.2)
            s1 = int(con.report()["cpu0.pattern_seq"]); tb = time.monotonic()
            reply = call(sock, {"cmd": "branch", "n": 1,
                                "dir": os.path.join(workdir, f"dip{mem_mib}{pages}{backend}{i}")})
            s2 = int(con.report()["cpu0.pattern_seq"]); tc = time.monotonic()
            time.sleep(0.2)
            s3 = int(con.report()["cpu0.pattern_seq"]); td = time.monotonic()
            dips.append(((s3 - s2) / (td - tc)) / ((s1 - s0) / (tb - ta)))
            call(os.path.join(reply["children"][0]["dir"], "control.sock"), {"cmd": "shutdown"})
            call(sock, {"cmd": "zygote", "action": "release", "id": reply["zygote"]})
    finally:
        stop(proc, sock)
    row = {"bench": "branch", "engine": "fork", "mem_mib": mem_mib, "guest_pages": pages,
          "mem_backend": backend, "branches": branches, "interval_ms": INTERVAL_MS,
          "pause_us_p50": pct(pause, 50), "pause_us_p99": pct(pause, 99),
          "park_us_p50": pct(park, 50),
          "capture_us_p50": pct(capture, 50), "fork_us_p50": pct(fork_, 50),
          "guest_stall_us_p50": pct(stall, 50), "guest_stall_us_p99": pct(stall, 99),
          "child_ready_ms_p50": round(pct(ready, 50), 2) if ready else None,
          "children_answered": len(ready),
          "source_write_rate_after_over_before_200ms": round(statistics.median(dips), 3)}
    if backend == "anon":
        # How much of the RAM was back in 2 MiB mappings when each branch began.
        row["anon_huge_mib_before_p50"] = pct(huge_before, 50)
        row["anon_huge_mib_before_min"] = min(huge_before)
    else:
        row["hugetlb_spare_pages_min"] = hugetlb_free_min
    emit(row)


def bench_fanout(workdir, n):
    proc, con, sock = start_source(workdir, 256, "work=idle")
    try:
        con.wait("DONE")
        t0 = time.monotonic()
        reply = call(sock, {"cmd": "branch", "n": n, "dir": os.path.join(workdir, "fan")},
                     timeout=600)
        t_built = time.monotonic()
        kids = [c["dir"] for c in reply["children"]]
        for k in kids:
            with open(os.path.join(k, "serial.in"), "w") as fifo:
                fifo.write("ping\n")
        pending = set(kids)
        end = time.monotonic() + 120
        while pending and time.monotonic() < end:
            for k in list(pending):
                with open(os.path.join(k, "serial.log")) as f:
                    if "pong\n" in f.read():
                        pending.discard(k)
            time.sleep(0.005)
        t_all = time.monotonic()
        pss, priv = [], []
        for c in reply["children"]:
            with open(f"/proc/{c['pid']}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss.append(int(line.split()[1]) / 1024)
                    if line.startswith("Private_Dirty:"):
                        priv.append(int(line.split()[1]) / 1024)
        emit({"bench": "branch-fanout", "engine": "fork", "n": n, "answered": n - len(pending),
              "pause_us": reply["pause_us"],
              "all_built_ms": round((t_built - t0) * 1000, 1),
              "all_ready_ms": round((t_all - t0) * 1000, 1),
              "pss_per_child_mib": round(statistics.mean(pss), 2),
              "private_dirty_per_child_mib": round(statistics.mean(priv), 2)})
        for k in kids:
            try:
                call(os.path.join(k, "control.sock"), {"cmd": "shutdown"}, timeout=10)
            except Exception:
                pass
    finally:
        stop(proc, sock)


def qmp(sock_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    f = s.makefile("rw")
    f.readline()  # greeting

    def cmd(name, args=None):
        req = {"execute": name}
        if args:
            req["arguments"] = args
        f.write(json.dumps(req) + "\n")
        f.flush()
        while True:
            msg = json.loads(f.readline())
            if "return" in msg or "error" in msg:
                return msg
    cmd("qmp_capabilities")
    return cmd


def bench_qemu_bg(workdir, mem_mib, runs):
    need_mib = mem_mib + 512
    if mem_available_mib() < need_mib + HEADROOM_MIB:
        emit({"bench": "branch", "engine": "qemu-bg", "mem_mib": mem_mib,
              "error": f"not run: needs {need_mib} MiB plus {HEADROOM_MIB} MiB left to others, "
                       f"MemAvailable is {mem_available_mib()} MiB"})
        return
    qsock = os.path.join(workdir, "qmp.sock")
    append = f"work=pattern,stall pattern_mib={mem_mib} stall_us={STALL_US}"
    proc = subprocess.Popen(
        [os.path.join(ROOT, "guest/probe/run-qemu.sh"), PROBE, f"{guest_mib(mem_mib)}M", "2", append,
         "--", "-qmp", f"unix:{qsock},server,nowait"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        # invtsc makes QEMU refuse to migrate (and so to background-snapshot).
        env=dict(os.environ, QEMU_CPU="host,-arch-capabilities"))
    con = Console(proc)
    stalls, downtime = [], []
    try:
        con.wait("READY", timeout=60)
        end = time.monotonic() + 600
        while time.monotonic() < end:
            if int(con.report().get("cpu0.pattern_seq", 0)) >= 2 * mem_mib * 256:
                break
            time.sleep(0.5)
        cmd = qmp(qsock)
        cmd("migrate-set-capabilities",
            {"capabilities": [{"capability": "background-snapshot", "state": True}]})
        for i in range(runs):
            con.command("stall-window\n", "stall-window.end")
            # The RAM goes to /dev/null: the stall is the pause plus the guest's writes
            # waiting for their page to be saved, not the disk (forkd's rows write nothing).
            r = cmd("migrate", {"uri": "exec:cat > /dev/null"})
            if "error" in r:
                raise RuntimeError(r["error"])
            while True:
                st_full = cmd("query-migrate")["return"]
                st = st_full.get("status")
                if st in ("completed", "failed", "cancelled"):
                    break
                time.sleep(0.01)
            if st != "completed":
                raise RuntimeError(f"background snapshot {st}: {st_full.get('error-desc', '')}")
            time.sleep(0.05)
            window = con.command("stall-window\n", "stall-window.end")
            stalls.append(int(window.get("cpu1.stall_window_max_us", 0)) or STALL_US)
            downtime.append(st_full.get("downtime"))
        emit({"bench": "branch", "engine": "qemu-bg", "mem_mib": mem_mib, "guest_pages": "2m",
              "runs": runs, "guest_stall_us_p50": pct(stalls, 50),
              "guest_stall_us_p99": pct(stalls, 99),
              "downtime_ms_p50": pct([d for d in downtime if d is not None], 50)})
    except Exception as e:
        emit({"bench": "branch", "engine": "qemu-bg", "mem_mib": mem_mib, "error": str(e)})
    finally:
        proc.kill()
        proc.wait()


def main():
    sizes = [int(x) for x in (sys.argv[1] if len(sys.argv) > 1 else "256 1024 4096 8192").split()]
    page_sizes = (sys.argv[2] if len(sys.argv) > 2 else "2m 4k").split()
    branches = int(os.environ.get("BRANCHES", "20"))
    backends = os.environ.get("BRANCH_BACKENDS", "anon").split()
    parts = os.environ.get("BRANCH_PARTS", "branch qemu fanout").split()
    qemu_sizes = [int(x) for x in os.environ.get("BRANCH_QEMU_SIZES", "256 1024 4096").split()]
    workdir = tempfile.mkdtemp(prefix="forkd-bench-branch.")
    try:
        for mem in sizes if "branch" in parts else []:
            for pages in page_sizes:
                for backend in backends:
                    log(f"{mem} MiB, {pages} guest pages, {backend} host memory")
                    bench_size(workdir, mem, pages, branches, backend)
        for mem in qemu_sizes if "qemu" in parts else []:
            log(f"QEMU background-snapshot, {mem} MiB")
            bench_qemu_bg(workdir, mem, 5)
        if "fanout" in parts:
            log("100 children from one zygote")
            bench_fanout(workdir, 100)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
