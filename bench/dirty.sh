#!/usr/bin/env bash
# Dirty tracking for diff snapshots (docs/diff-snapshots.md): KVM's dirty log against its dirty
# ring (--dirty-tracking log|ring), probe guest, 2 vCPUs: cpu0 idle, cpu1 rewrites DIRTY MiB
# over and over (pattern writer; idle for 0). Two kinds of JSON rows on stdout:
#
#   {"bench":"dirty","what":"collect","tracking":"log"|"ring",...,"mem_mib":M,"dirty_mib":N,
#    "collect_us":[...],"collect_us_median":...,"dirty_mib_measured":...,"ring_full_exits":...}
#     A full persisted BRANCH arms tracking, then REPS diff persisted BRANCHes, each SETTLE_S
#     after the last (the writer sweeps its region many times over): collect_us is reading and
#     resetting the dirty pages inside each diff's pause.
#
#   {"bench":"dirty","what":"write_rate","tracking":"none"|"log"|"ring",...,
#    "before_mpages_s":...,"after_mpages_s":...,"steady_mpages_s":...}
#     The writer's rate (guest-side: its published step counter, read with the probe's
#     `report` over the serial line), in 1 s windows: before any snapshot, in the first second
#     after a stop-and-save snapshot (with track_dirty for log and ring: every page of the
#     region is write-protected again, so each first write faults; none: the same snapshot
#     without tracking), and a second later.
#
#   bench/dirty.sh ["MEM_MIB ..."] ["DIRTY_MIB ..."] ["TRACKING ..."]
#     defaults "1024 4096", "0 100 500", "log ring"; MEM_MIB "none": the write-rate rows only.
#     REPS (3), SETTLE_S (1), RATE_MEM (1024), RATE_DIRTY (500) in the environment. Native
#     /dev/kvm only.
set -euo pipefail
cd "$(dirname "$0")/.."

sizes=${1:-"1024 4096"}
dirties=${2:-"0 100 500"}
trackings=${3:-"log ring"}
export REPS=${REPS:-3} SETTLE_S=${SETTLE_S:-1} RATE_MEM=${RATE_MEM:-1024}
export RATE_DIRTY=${RATE_DIRTY:-500}
kvm_kind=native-$(. scripts/kvm-kind.sh && kvm_kind)
if [ "$kvm_kind" = native-none ]; then
	echo "bench/dirty.sh: no native /dev/kvm: nested timings are not results, nothing recorded" >&2
	exit 1
fi
export KIND=$kvm_kind

work=$(mktemp -d /tmp/forkd-bench.XXXXXX)
mkdir "$work/bin"
make -s -j2 build/forkd-vmm build/forkd probe >&2
cp build/forkd-vmm build/forkd build/guest/probe.elf "$work/bin/"
disk_dir=$(mktemp -d /var/tmp/forkd-bench.XXXXXX)
trap 'rm -rf "$work" "$disk_dir"' EXIT

python3 - "$work" "$disk_dir" "$sizes" "$dirties" "$trackings" <<'PY'
import json, os, re, shutil, statistics, subprocess, sys, time

work, disk_dir, sizes, dirties, trackings = sys.argv[1:6]
reps, settle = int(os.environ["REPS"]), float(os.environ["SETTLE_S"])
vmm, forkd, probe = (f"{work}/bin/{n}" for n in ("forkd-vmm", "forkd", "probe.elf"))
note = ("2-core machine shared with other helpers' builds and tests (load average %.1f at start)"
        % os.getloadavg()[0])


def log(msg):
    print(f"bench/dirty.sh: {msg}", file=sys.stderr, flush=True)


class Vm:
    def __init__(self, mem, dirty, tracking):
        self.sock, self.serial = f"{work}/vm.sock", f"{work}/serial.log"
        fifo = f"{work}/serial.in"
        for p in (self.sock, self.serial, fifo):
            if os.path.exists(p):
                os.unlink(p)
        os.mkfifo(fifo)
        # Read-write: the fifo stays open for the VMM whatever we write.
        self.tx = os.open(fifo, os.O_RDWR)
        append = "work=idle" if dirty == 0 else f"work=idle,pattern pattern_mib={dirty}"
        argv = [vmm, "--kernel", probe, "--mem", f"{mem}M", "--cpus", "2", "--append", append,
                "--serial", self.serial, "--serial-in", fifo, "--control", self.sock]
        if tracking != "none":
            argv += ["--dirty-tracking", tracking]
        self.proc = subprocess.Popen(argv, stderr=open(f"{work}/vmm.err", "w"))
        self.wait_for("cpu1.pattern_base=" if dirty else "DONE", 120)

    def text(self):
        try:
            with open(self.serial, errors="replace") as f:
                return f.read()
        except FileNotFoundError:  # not created yet
            return ""

    def wait_for(self, what, timeout):
        deadline = time.time() + timeout
        while what not in self.text():
            if time.time() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"no '{what}' from the probe: "
                                 + open(f"{work}/vmm.err").read() + self.text()[-2000:])
            time.sleep(0.01)

    def seq(self):
        """cpu1's published step count, and when it was asked for."""
        before = self.text().count("report.end")
        t = time.monotonic()
        os.write(self.tx, b"report\n")
        deadline = time.time() + 10
        while self.text().count("report.end") <= before:
            if time.time() > deadline:
                raise SystemExit("no report from the probe")
            time.sleep(0.002)
        return int(re.findall(r"cpu1\.pattern_seq=(\d+)", self.text())[-1]), t

    def call(self, req):
        out = subprocess.run([forkd, "vm", "call", "--socket", self.sock, "--timeout", "600000",
                              json.dumps(req)], capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{req}: {out.stdout}{out.stderr}")
        r = json.loads(out.stdout)
        if "zygote" in r:
            self.call({"cmd": "zygote", "action": "release", "id": r["zygote"]})
        return r

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        os.close(self.tx)


def rate(vm, seconds=1.0):
    s0, t0 = vm.seq()
    time.sleep(seconds)
    s1, t1 = vm.seq()
    return round((s1 - s0) / (t1 - t0) / 1e6, 3)


def clean():
    for n in os.listdir(disk_dir):
        shutil.rmtree(os.path.join(disk_dir, n))


row0 = {"bench": "dirty", "kvm": os.environ["KIND"], "engine": "persisted-branch", "note": note}
for tracking in trackings.split():
    for mem in [] if sizes == "none" else map(int, sizes.split()):
        for dirty in map(int, dirties.split()):
            log(f"collect: {tracking}, {mem} MiB, {dirty} MiB dirtied")
            vm = Vm(mem, dirty, tracking)
            try:
                vm.call({"cmd": "branch", "n": 0, "persist": f"{disk_dir}/d0", "wait": True,
                         "track_dirty": True})
                collects, pages, last = [], [], None
                for i in range(1, reps + 1):
                    time.sleep(settle)
                    last = vm.call({"cmd": "branch", "n": 0, "persist": f"{disk_dir}/d{i}",
                                    "parent": f"{disk_dir}/d{i - 1}", "wait": True})
                    collects.append(last["collect_us"])
                    pages.append(last["dirty_pages"])
                row = dict(row0, what="collect", tracking=last["dirty_tracking"],
                           ring=tracking if tracking.startswith("ring") else None, mem_mib=mem,
                           dirty_mib=dirty, collect_us=collects,
                           collect_us_median=statistics.median(collects),
                           dirty_mib_measured=round(statistics.median(pages) * 4096 / 2**20, 1),
                           ring_full_exits=last.get("ring_full_exits"))
                print(json.dumps(row), flush=True)
            finally:
                vm.stop()
                clean()

mem, dirty = int(os.environ["RATE_MEM"]), int(os.environ["RATE_DIRTY"])
for tracking in ["none"] + trackings.split():
    log(f"write rate: {tracking}, {mem} MiB, {dirty} MiB written over and over")
    vm = Vm(mem, dirty, tracking)
    try:
        time.sleep(0.5)
        before = rate(vm)
        req = {"cmd": "snapshot", "path": f"{disk_dir}/s0", "mode": "stop"}
        if tracking != "none":
            req["track_dirty"] = True
        r = vm.call(req)
        after = rate(vm)
        steady = rate(vm)
        exits = None
        if tracking.startswith("ring"):
            # Counted by the next snapshot's reply: the exits of the windows above.
            exits = vm.call({"cmd": "snapshot", "path": f"{disk_dir}/s1", "mode": "stop",
                             "parent": f"{disk_dir}/s0"}).get("ring_full_exits")
        print(json.dumps(dict(row0, what="write_rate", engine="snapshot-stop", tracking=tracking,
                              mem_mib=mem, dirty_mib=dirty, before_mpages_s=before,
                              after_mpages_s=after, steady_mpages_s=steady,
                              ring_full_exits=exits)), flush=True)
    finally:
        vm.stop()
        clean()
PY
