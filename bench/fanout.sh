#!/usr/bin/env bash
# Fan-out from a snapshot: N children of one snapshot by `forkd spawn`, in both modes in the
# same run, alternating: exec (one forkd-vmm per child, each restoring the snapshot) and
# fanout (one restore, the children forked by its BRANCH zygote; docs/branch.md).
#
#   bench/fanout.sh [N]        (default 100; FANOUT_RUNS=5 runs per mode, FANOUT_MIB=256)
#
# Per run: all_running_ms (every child answers `status` on its control socket, as printed by
# `forkd spawn`), all_ready_ms (from the spawn's start until every guest answered `ping` with
# `pong` on its console: each child is a running VM) and the CPU each child's VMM has used.
# Then one summary row per mode with the medians:
#   {"bench":"fanout","source":"snapshot","n":100,"mode":"fanout","all_ready_ms":...}
# The snapshot (of an idle 2-vCPU probe, stop-and-save) is on disk (/var/tmp), in the page
# cache: this measures starting children, not reading the file (bench/snapshot.sh does cold).
# Only native /dev/kvm counts (issue 12): without it nothing is recorded.
set -euo pipefail
cd "$(dirname "$0")/.."

n=${1:-100}
runs=${FANOUT_RUNS:-5}
guest_mib=${FANOUT_MIB:-256}
kvm_kind=native-$(. scripts/kvm-kind.sh && kvm_kind)
if [ "$kvm_kind" = native-none ]; then
	echo "bench/fanout.sh: no native /dev/kvm: nested timings are not results, nothing recorded" >&2
	exit 1
fi

work=$(mktemp -d /tmp/forkd-fanout.XXXXXX)
snap_dir=$(mktemp -d /var/tmp/forkd-fanout.XXXXXX)
vm_pid=""
# Private copies: others may relink build/ while this runs (forkd finds forkd-vmm next to it).
make -s -j2 build/forkd-vmm build/forkd probe >&2
mkdir "$work/bin"
cp build/forkd-vmm build/forkd build/guest/probe.elf "$work/bin/"
vmm=$work/bin/forkd-vmm
forkd=$work/bin/forkd

cleanup() {
	if [ -n "$vm_pid" ]; then
		kill "$vm_pid" 2>/dev/null || true
		wait "$vm_pid" 2>/dev/null || true
	fi
	for d in "$work"/out-*; do
		[ -d "$d" ] && { $forkd kill "$d" >/dev/null 2>&1 || true; }
	done
	rm -rf "$work" "$snap_dir"
}
trap cleanup EXIT
log() { echo "bench/fanout.sh: $*" >&2; }

log "snapshot of an idle ${guest_mib} MiB probe; $n children, $runs runs per mode"
$vmm --kernel "$work/bin/probe.elf" --mem "${guest_mib}M" --cpus 2 --append "work=idle,idle" \
	--serial "$work/serial.log" --serial-in none --control "$work/vm.sock" 2>"$work/vmm.err" &
vm_pid=$!
for _ in $(seq 1 600); do grep -q '^READY' "$work/serial.log" 2>/dev/null && break; sleep 0.05; done
grep -q '^READY' "$work/serial.log" || { log "the probe did not boot: $(cat "$work/vmm.err")"; exit 1; }
$forkd vm call --socket "$work/vm.sock" --timeout 60000 \
	"{\"cmd\":\"snapshot\",\"path\":\"$snap_dir/snap\",\"mode\":\"stop\",\"resume\":false}" >/dev/null
kill "$vm_pid"
wait "$vm_pid" 2>/dev/null || true
vm_pid=""

python3 - "$forkd" "$snap_dir/snap" "$work" "$n" "$runs" "$guest_mib" "$kvm_kind" <<'PY'
import json, os, statistics, subprocess, sys, time

forkd, snap, work = sys.argv[1], sys.argv[2], sys.argv[3]
n, runs, guest_mib, kind = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
tick = os.sysconf("SC_CLK_TCK")
loadavg = lambda: float(open("/proc/loadavg").read().split()[0])


def one(mode, run):
    out = os.path.join(work, "out-%s-%d" % (mode, run))
    row = {"bench": "fanout-run", "source": "snapshot", "n": n, "mode": mode, "run": run,
           "guest_mib": guest_mib, "kvm": kind, "load1": loadavg()}
    t0 = time.monotonic()
    spawn = subprocess.run([forkd, "spawn", snap, "-n", str(n), "--mode", mode, "--out", out,
                            "--timeout", "120000"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    if spawn.returncode != 0:
        row["error"] = "forkd spawn exited %d: %s" % (spawn.returncode, spawn.stderr.strip())
        return row, out
    summary = json.loads(spawn.stdout.strip().splitlines()[-1])
    children = [os.path.join(out, "child-%d" % i) for i in range(n)]
    for c in children:
        fd = os.open(os.path.join(c, "serial.in"), os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, b"ping\n")
        os.close(fd)
    pending, deadline = set(children), time.monotonic() + 120
    while pending and time.monotonic() < deadline:
        for c in list(pending):
            with open(os.path.join(c, "serial.log"), "rb") as f:
                if b"pong" in f.read():
                    pending.discard(c)
        time.sleep(0.002)
    row["all_ready_ms"] = round((time.monotonic() - t0) * 1e3, 1)
    row["all_running_ms"] = summary["all_running_ms"]
    if "fanout_ms" in summary:
        row["fanout_ms"] = summary["fanout_ms"]
    cpu = []
    for c in children:
        pid = int(open(os.path.join(c, "pid")).read())
        f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
        cpu.append((int(f[11]) + int(f[12])) * 1000 / tick)
    row["cpu_ms_per_child"] = round(sum(cpu) / len(cpu), 1)
    if pending:
        row["error"] = "%d children did not answer pong within 120 s" % len(pending)
    return row, out


results = {"exec": [], "fanout": []}
for run in range(1, runs + 1):
    # Alternate which mode goes first, so that neither always meets a warmer machine.
    order = ["exec", "fanout"] if run % 2 else ["fanout", "exec"]
    for mode in order:
        row, out = one(mode, run)
        print(json.dumps(row), flush=True)
        subprocess.run([forkd, "kill", out], stdout=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", out])
        if "error" not in row:
            results[mode].append(row)
        time.sleep(0.5)

med = lambda rows, key: round(statistics.median(r[key] for r in rows), 1)
summary = {}
for mode, rows in results.items():
    if not rows:
        continue
    summary[mode] = {"bench": "fanout", "source": "snapshot", "n": n, "mode": mode,
                     "guest_mib": guest_mib, "kvm": kind, "runs": len(rows),
                     "all_ready_ms": med(rows, "all_ready_ms"),
                     "all_running_ms": med(rows, "all_running_ms"),
                     "cpu_ms_per_child": med(rows, "cpu_ms_per_child"),
                     "load1_median": med(rows, "load1")}
if "exec" in summary and "fanout" in summary:
    summary["fanout"]["speedup_vs_exec"] = round(
        summary["exec"]["all_ready_ms"] / summary["fanout"]["all_ready_ms"], 2)
for row in summary.values():
    print(json.dumps(row), flush=True)
if len(summary) != 2:
    sys.exit("bench/fanout.sh: a mode had no successful run")
PY
