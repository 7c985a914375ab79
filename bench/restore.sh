#!/usr/bin/env bash
# Restore: eager-mapped (`file`: MAP_PRIVATE of the snapshot's memory file, the
# kernel faults pages in from the page cache) vs lazy (`uffd`: forkd-uffd fills
# each page on first touch with UFFDIO_COPY) vs lazy with the working set
# prefetched (`uffd-prefetch`: a first uffd run's first-touch record replayed
# in bulk) vs lazy with fault-around (`uffd-around64`: a fault fills its
# untouched neighbours in its aligned 64-page block). Per mode: time from
# forkd-vmm's start to the guest's first line after restore (`genid.changed`, ready_ms), and to the end of a fixed task,
# the probe's strict verify of all its pattern memory (task_ms, from start).
# Prints one JSON object per line on stdout; progress goes to stderr.
#
#   bench/restore.sh ["TOUCHED_MIB ..."] [RUNS]   (default "256 1024", 5 runs)
#
# RESTORE_BENCH_PARTS (default "restore memfd"): `memfd` adds the BRANCH pause of
# the same guest with anon and memfd RAM (`--mem-backend`), a fresh source per
# run: the first BRANCH of a memfd VM also remaps its RAM private
# (docs/design/userfaultfd.md), the second is then like anon; rows
# {"bench":"branch-backend",...} with pause_us of the first and second BRANCH.
#
# The guest has TOUCHED_MIB of pattern memory (two writers, half each) and
# 256 MiB more RAM. The snapshot lives in /var/tmp (disk); its page cache is
# warm (the snapshot was just written, and nothing drops caches on a shared
# machine): this measures the fault paths, not the disk.
set -euo pipefail
cd "$(dirname "$0")/.."

sizes=${1:-"256 1024"}
runs=${2:-5}
kvm_kind=native-$(. scripts/kvm-kind.sh && kvm_kind)
if [ "$kvm_kind" = native-none ]; then
	echo "bench/restore.sh: no native /dev/kvm: nested timings are not results, nothing recorded" >&2
	exit 1
fi

work=$(mktemp -d /var/tmp/forkd-bench-restore.XXXXXX)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
# Private copies: others may relink build/ while this runs.
make -s -j2 build/forkd-vmm build/forkd-uffd probe >&2
mkdir "$work/bin"
cp build/forkd-vmm build/forkd-uffd build/guest/probe.elf "$work/bin/"

PARTS=${RESTORE_BENCH_PARTS:-"restore memfd"} WORK=$work RUNS=$runs SIZES=$sizes KVM_KIND=$kvm_kind \
	python3 - <<'EOF'
import json, os, select, socket, statistics, subprocess, sys, time

work, runs, kind = os.environ["WORK"], int(os.environ["RUNS"]), os.environ["KVM_KIND"]
vmm, uffd, probe = (f"{work}/bin/{n}" for n in ("forkd-vmm", "forkd-uffd", "probe.elf"))


def log(*a):
    print("bench/restore.sh:", *a, file=sys.stderr, flush=True)


class Lines:
    """A child's stdout, line by line, with a deadline."""

    def __init__(self, proc):
        self.proc, self.buf = proc, b""

    def wait(self, needle, timeout=120):
        end = time.monotonic() + timeout
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                if needle in line:
                    return line.decode(errors="replace")
            left = end - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"no {needle!r} within {timeout} s")
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if r:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError(f"stdout closed before {needle!r}")
                self.buf += chunk


def call(sock, req):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.sendall((json.dumps(req) + "\n").encode())
    data = b""
    while not data.endswith(b"\n"):
        data += s.recv(65536)
    return json.loads(data)


def make_snapshot(snap, touched):
    sock = f"{work}/src.sock"
    p = subprocess.Popen([vmm, "--kernel", probe, "--cpus", "2", "--mem", f"{touched + 256}M",
                          "--append", f"work=pattern,pattern pattern_mib={touched // 2} "
                          "pattern_freeze=genid", "--control", sock, "--serial-in", "none"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    lines = Lines(p)
    # Each writer says its base once it has zeroed its memory; then let them write a while.
    seen = set()
    while len(seen) < 2:
        seen.add(lines.wait(b"pattern_base").split(".")[0])
    time.sleep(1 + touched / 256)
    r = call(sock, {"cmd": "snapshot", "path": snap})
    if not r.get("ok"):
        raise RuntimeError(f"snapshot: {r}")
    call(sock, {"cmd": "shutdown"})
    p.wait(60)


def one_restore(snap, mode, record):
    handler = None
    args = [vmm, "--restore", snap]
    if mode != "file":
        hsock = f"{work}/h.sock"
        hargs = [uffd, "--socket", hsock, "--snapshot", snap]
        hargs += ["--prefetch", record] if mode == "uffd-prefetch" else ["--record", record]
        if mode == "uffd-around64":
            hargs += ["--fault-around", "64"]
        handler = subprocess.Popen(hargs, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        Lines(handler).wait(b"listening")
        args += ["--restore-mode", "uffd", "--uffd-handler", hsock]
    t0 = time.monotonic()
    p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        return restore_steps(p, handler, mode, t0)
    finally:
        # A run that failed or stalled leaves nothing running.
        for proc in (p, handler):
            if proc and proc.poll() is None:
                proc.kill()
                proc.wait()


def restore_steps(p, handler, mode, t0):
    lines = Lines(p)
    lines.wait(b"genid.changed=")
    t_ready = time.monotonic()
    # "pattern.frozen=0" comes when a writer froze later than the probe's 100 ms window
    # (a slow lazy restore): ask for reports until every writer says it froze.
    if "frozen=1" not in lines.wait(b"pattern.frozen="):
        frozen = set()
        for _ in range(100):
            p.stdin.write(b"report\n")
            p.stdin.flush()
            while not (line := lines.wait(b"")).startswith("report.end"):
                if "pattern_frozen=1" in line:
                    frozen.add(line.split(".")[0])
            if len(frozen) == 2:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"{mode}: the writers never froze")
    p.stdin.write(b"verify strict\n")
    p.stdin.flush()
    end = lines.wait(b"verify.end")
    t_task = time.monotonic()
    if "mode=strict" not in end:
        raise RuntimeError(f"{mode}: {end}")
    p.stdin.write(b"poweroff\n")
    p.stdin.flush()
    p.wait(60)
    stats = {}
    if handler:
        out, err = handler.communicate(timeout=60)
        if handler.returncode != 0:
            raise RuntimeError(f"forkd-uffd exit {handler.returncode}: {err.decode()}")
        stats = json.loads(out.decode().strip().splitlines()[-1])
    return (t_ready - t0) * 1000, (t_task - t0) * 1000, stats


parts = os.environ["PARTS"].split()


def branch_pauses(touched, backend):
    """pause_us of a fresh source's first and second BRANCH (children shut down at once)."""
    sock = f"{work}/b.sock"
    p = subprocess.Popen([vmm, "--kernel", probe, "--cpus", "2", "--mem", f"{touched + 256}M",
                          "--mem-backend", backend, "--append",
                          f"work=pattern,pattern pattern_mib={touched // 2} pattern_freeze=genid",
                          "--control", sock, "--serial-in", "none"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    Lines(p).wait(b"DONE")
    time.sleep(2 + touched / 256)
    pauses = []
    for i in range(2):
        r = call(sock, {"cmd": "branch", "n": 1, "dir": f"{work}/b-{backend}-{i}"})
        if not r.get("ok"):
            raise RuntimeError(f"branch {backend}: {r}")
        pauses.append(r["pause_us"])
        kid = r["children"][0]
        try:
            call(kid["dir"] + "/control.sock", {"cmd": "shutdown"})
        except OSError:
            pass
        time.sleep(0.3)
        call(sock, {"cmd": "zygote", "action": "release", "id": r["zygote"]})
    call(sock, {"cmd": "shutdown"})
    p.wait(60)
    os.system(f"rm -rf '{work}'/b-{backend}-*")
    return pauses


for touched in (int(s) for s in os.environ["SIZES"].split()):
    if "memfd" in parts:
        res = {"anon": [], "memfd": []}
        for i in range(runs):
            for backend in res:
                res[backend].append(branch_pauses(touched, backend))
        for backend, rows in res.items():
            print(json.dumps({"bench": "branch-backend", "backend": backend,
                              "touched_mib": touched, "mem_mib": touched + 256, "runs": runs,
                              "kvm": kind,
                              "first_pause_us_p50": statistics.median(r[0] for r in rows),
                              "second_pause_us_p50": statistics.median(r[1] for r in rows)}),
                  flush=True)
        log(f"{touched} MiB: branch pauses done")
    if "restore" not in parts:
        continue
    snap, record = f"{work}/snap-{touched}", f"{work}/record-{touched}"
    log(f"{touched} MiB: snapshot")
    make_snapshot(snap, touched)
    one_restore(snap, "file", record)  # warm-up
    for attempt in range(3):  # the first-touch record; also a warm-up
        try:
            one_restore(snap, "uffd", record)
            break
        except RuntimeError as e:
            log(f"{touched} MiB: recording run failed: {e}")
    res = {m: [] for m in ("file", "uffd", "uffd-prefetch", "uffd-around64")}
    failed = {m: 0 for m in res}
    for i in range(runs):
        for mode in res:  # interleaved, so load drifts hit every mode alike
            # uffd runs re-record into a scratch file: the prefetch keeps the first record.
            rec = record if mode == "uffd-prefetch" else f"{record}.scratch"
            try:
                res[mode].append(one_restore(snap, mode, rec))
            except RuntimeError as e:
                # Counted, not hidden: docs/design/userfaultfd.md, "A vCPU that stalls".
                log(f"{touched} MiB {mode}: run {i + 1} failed: {e}")
                failed[mode] += 1
        log(f"{touched} MiB: run {i + 1}/{runs} done")
    for mode, rows in res.items():
        row = {"bench": "restore", "mode": mode, "touched_mib": touched,
               "mem_mib": touched + 256, "runs": len(rows), "failed": failed[mode], "kvm": kind}
        if not rows:
            print(json.dumps(row), flush=True)
            continue
        row |= {
               "ready_ms_p50": round(statistics.median(r[0] for r in rows), 1),
               "task_ms_p50": round(statistics.median(r[1] for r in rows), 1),
               "task_ms_min": round(min(r[1] for r in rows), 1)}
        if mode != "file":
            for k in ("faults", "copied", "zeroed", "around", "prefetched", "prefetch_us"):
                row[k + "_p50"] = statistics.median(r[2].get(k, 0) for r in rows)
        print(json.dumps(row), flush=True)
    os.system(f"rm -rf '{snap}' '{record}' '{record}.scratch'")
EOF
