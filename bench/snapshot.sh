#!/usr/bin/env bash
# Snapshots: pause and write speed of `snapshot` (tmpfs and disk) against the raw
# write speed of the same target, restore to a guest answering `pong`, fan-out of
# 100 children from one snapshot, and QEMU's stop + migrate-to-file pause for the
# same guest. Prints one JSON object per line on stdout; progress goes to stderr.
#
#   bench/snapshot.sh ["MEM_MIB ..."]     (default "256 1024 4096": MiB the guest touches)
#
# SNAPSHOT_BENCH_PARTS (default "stop live fanout qemu qemubg") picks the parts: stop is
# stop-and-save with its restore, live the live snapshot (a BRANCH pause; the
# zygote writes) with its XXH3 cost and `forkd snapshot verify` speed, fanout
# 100 children of one snapshot on disk, cold (page cache dropped) and after
# `forkd snapshot prewarm`, FANOUT_RUNS (default 1) pairs of rows; qemubg QEMU's
# background-snapshot (the pause it reports as downtime, on the guest the live
# rows use) at each size, next to the live rows.
#
# Each guest gets 256 MiB more RAM than it touches. Snapshots go under
# /dev/shm/forkd-bench.* (tmpfs) and /var/tmp/forkd-bench.* (disk) and are
# deleted after each measurement.
set -euo pipefail
cd "$(dirname "$0")/.."

sizes=${1:-"256 1024 4096"}
restore_runs=5
fanout_n=100
fanout_mib=256
qemu_sizes="256 1024"
parts=${SNAPSHOT_BENCH_PARTS:-"stop live fanout qemu qemubg"}
live_runs=5
want() { [[ " $parts " == *" $1 "* ]]; }
# Where the numbers come from: only native KVM counts (issue 12); say which.
kvm_kind=native-$(. scripts/kvm-kind.sh && kvm_kind)
if [ "$kvm_kind" = native-none ]; then
	echo "bench/snapshot.sh: no native /dev/kvm: nested timings are not results, nothing recorded" >&2
	exit 1
fi

work=$(mktemp -d /tmp/forkd-bench.XXXXXX)
# Private copies: others may relink build/ while this runs. forkd finds forkd-vmm next to itself.
# SNAPSHOT_BENCH_BIN=DIR takes forkd-vmm, forkd, readytime and probe.elf from DIR instead (an
# older build, to compare before and after in the same run).
mkdir "$work/bin"
if [ -n "${SNAPSHOT_BENCH_BIN:-}" ]; then
	cp "$SNAPSHOT_BENCH_BIN"/{forkd-vmm,forkd,readytime,probe.elf} "$work/bin/"
else
	make -s -j2 build/forkd-vmm build/forkd probe build/bench/readytime >&2
	cp build/forkd-vmm build/forkd build/bench/readytime build/guest/probe.elf "$work/bin/"
fi
probe=$work/bin/probe.elf
vmm=$work/bin/forkd-vmm
forkd=$work/bin/forkd
readytime=$work/bin/readytime
tmpfs_dir=$(mktemp -d /dev/shm/forkd-bench.XXXXXX)
disk_dir=$(mktemp -d /var/tmp/forkd-bench.XXXXXX)
vm_pid=""

cleanup() {
	if [ -n "$vm_pid" ]; then
		kill "$vm_pid" 2>/dev/null || true
		wait "$vm_pid" 2>/dev/null || true
	fi
	if [ -d "$work/fanout" ]; then $forkd kill "$work/fanout" >/dev/null 2>&1 || true; fi
	rm -rf "$work" "$tmpfs_dir" "$disk_dir"
}
trap cleanup EXIT

log() { echo "bench/snapshot.sh: $*" >&2; }

# Field of a one-line JSON object on stdin.
json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# wait_for FILE PATTERN SECONDS
wait_for() {
	local deadline=$((SECONDS + $3))
	until grep -q "$2" "$1" 2>/dev/null; do
		if [ $SECONDS -ge $deadline ]; then
			log "no '$2' in $1 within $3 s"
			return 1
		fi
		sleep 0.05
	done
}

# boot_probe MEM_MIB APPEND: starts forkd-vmm in the background (vm_pid), control at $work/vm.sock.
boot_probe() {
	rm -f "$work/vm.sock" "$work/serial.log"
	$vmm --kernel "$probe" --mem "$1M" --cpus 2 --append "$2" --serial "$work/serial.log" \
		--serial-in none --control "$work/vm.sock" 2>"$work/vmm.err" &
	vm_pid=$!
}

stop_probe() {
	kill "$vm_pid" 2>/dev/null || true
	wait "$vm_pid" 2>/dev/null || true
	vm_pid=""
}

# raw_speed DIR MIB: MiB/s of dd writing MIB MiB of zeros with a final fsync.
raw_speed() {
	local out
	out=$(LC_ALL=C dd if=/dev/zero bs=1M count="$2" of="$1/raw" conv=fsync 2>&1 | tail -1)
	rm -f "$1/raw"
	# "N bytes (...) copied, S s, R MB/s"
	python3 -c 'import re,sys; s=float(re.search(r"copied, ([0-9.e+-]+) s", sys.argv[1]).group(1)); print(round(int(sys.argv[2])/s, 1))' "$out" "$2"
}

# snapshot_one TARGET DIR MIB KEEP: one snapshot of the running probe, as JSON.
snapshot_one() {
	local target=$1 dir=$2 mib=$3 reply raw
	reply=$($forkd vm call --socket "$work/vm.sock" --timeout 600000 \
		"{\"cmd\":\"snapshot\",\"path\":\"$dir/snap\",\"mode\":\"stop\",\"resume\":true}")
	[ "$4" = keep ] || rm -rf "$dir/snap"
	raw=$(raw_speed "$dir" "$mib")
	python3 - "$reply" "$target" "$mib" "$raw" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); mib = int(sys.argv[3])
print(json.dumps({"bench": "snapshot", "vmm": "forkd", "mode": "stop", "target": sys.argv[2],
                  "mem_mib": mib, "guest_mib": r["mem_bytes"] >> 20,
                  "pause_ms": round(r["pause_us"] / 1e3, 2),
                  "capture_ms": round(r["capture_us"] / 1e3, 2),
                  "write_ms": round(r["write_us"] / 1e3, 2),
                  "write_mib_per_s": round(mib / (r["write_us"] / 1e6), 1),
                  "hash_ms": round(r["hash_us"] / 1e3, 2),
                  "raw_mib_per_s": float(sys.argv[4])}))
# The issue's writer row: the snapshot writer against dd to the same directory, same run.
write_mib_s, dd_mib_s = mib / (r["write_us"] / 1e6), float(sys.argv[4])
print(json.dumps({"bench": "writer", "target": sys.argv[2], "mem_mib": mib,
                  "write_mib_per_s": round(write_mib_s, 1), "dd_mib_per_s": dd_mib_s,
                  "ratio_vs_dd": round(write_mib_s / dd_mib_s, 3) if dd_mib_s > 0 else None}))
PY
}

restore_bench() { # SNAP MIB GUEST_MIB
	local runs=()
	for run in $(seq 1 $restore_runs); do
		runs+=("$($readytime --prefix pong --send ping --mem-mib "$3" --timeout-ms 60000 -- \
			$vmm --restore "$1" --serial stdout --serial-in stdin 2>>"$work/restore.err" |
			json_field_from_fragment ready_ms)")
	done
	python3 -c 'import json,statistics,sys; r=[float(x) for x in sys.argv[2:]]; print(json.dumps({"bench":"restore","vmm":"forkd","target":"tmpfs","mem_mib":int(sys.argv[1]),"runs":len(r),"to_ready_ms":round(statistics.median(r),2),"to_ready_ms_all":r}))' "$2" "${runs[@]}"
}

# live_bench DIR MIB: live snapshots of the running probe (the BRANCH pause; its
# zygote writes into DIR while the VM runs), their XXH3 cost, and verify speed.
live_bench() {
	local dir=$1 mib=$2 replies=() verify
	for run in $(seq 1 $live_runs); do
		replies+=("$($forkd vm call --socket "$work/vm.sock" --timeout 600000 \
			"{\"cmd\":\"snapshot\",\"path\":\"$dir/live-$run\"}")")
		if [ "$run" -lt "$live_runs" ]; then rm -rf "$dir/live-$run"; fi
	done
	verify=$($forkd snapshot verify --json "$dir/live-$live_runs" || true)
	rm -rf "$dir/live-$live_runs"
	python3 - "$mib" "$kvm_kind" "$verify" "${replies[@]}" <<'PY'
import json, statistics, sys
mib, kind, verify = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
rs = [json.loads(x) for x in sys.argv[4:]]
for r in rs:
    if r.get("mode") != "live" or r.get("snapshot") != "ready":
        print(json.dumps({"bench": "snapshot", "vmm": "forkd", "mode": "live", "mem_mib": mib,
                          "error": "not a complete live snapshot: %s" % json.dumps(r)}))
        sys.exit(0)
p50 = lambda k: statistics.median(r[k] for r in rs)
print(json.dumps({"bench": "snapshot", "vmm": "forkd", "mode": "live", "mem_mib": mib,
                  "guest_mib": rs[0]["mem_bytes"] >> 20, "kvm": kind, "runs": len(rs),
                  "pause_ms_p50": round(p50("pause_us") / 1e3, 3),
                  "pause_ms_all": [round(r["pause_us"] / 1e3, 3) for r in rs],
                  "park_ms_p50": round(p50("park_us") / 1e3, 3),
                  "fork_ms_p50": round(p50("fork_us") / 1e3, 3),
                  "write_ms_p50": round(p50("write_us") / 1e3, 1),
                  "hash_ms_p50": round(p50("hash_us") / 1e3, 1),
                  "hash_mib_per_s": round(mib / (p50("hash_us") / 1e6), 0),
                  "hash_share_of_write": round(p50("hash_us") / p50("write_us"), 3),
                  "verify_ok": verify.get("ok"),
                  "verify_ms": round(verify.get("verify_us", 0) / 1e3, 1),
                  "verify_mib_per_s": round(verify.get("bytes_read", 0) / 1048576 /
                                            max(verify.get("verify_us", 1), 1) * 1e6, 0)}))
PY
}

# readytime prints JSON fields without braces.
json_field_from_fragment() { python3 -c 'import json,sys; print(json.loads("{"+sys.stdin.read()+"}")[sys.argv[1]])' "$1"; }

# qemu_background MIB GUEST_MIB APPEND: QEMU's background-snapshot of the same guest as the live
# rows (migrate with the background-snapshot capability: QEMU stops the VM, saves device state,
# write-protects RAM with userfaultfd, resumes, and writes RAM while the guest runs). pause_ms is
# QEMU's own `downtime` of the completed snapshot, like forkd's pause_us (request to resume).
qemu_background() {
	local mib=$1 guest_mib=$2 append=$3 qpid
	log "qemu background-snapshot: ${mib} MiB touched in a ${guest_mib} MiB guest"
	rm -f "$work/qmp.sock"
	guest/probe/run-qemu.sh "$probe" "${guest_mib}M" 2 "$append" -- \
		-cpu host,-arch-capabilities -qmp "unix:$work/qmp.sock,server,nowait" </dev/null >"$work/qemu.log" 2>"$work/qemu.err" &
	qpid=$!
	if ! wait_for "$work/qemu.log" "^DONE" 300; then
		echo "{\"bench\":\"snapshot\",\"vmm\":\"qemu\",\"mode\":\"background\",\"mem_mib\":$mib,\"error\":\"no DONE: $(head -c 200 "$work/qemu.err" | tr '\n"' ' _')\"}"
		kill $qpid 2>/dev/null || true
		wait $qpid 2>/dev/null || true
		return 0
	fi
	python3 - "$work/qmp.sock" "$tmpfs_dir/qemu-bg" "$mib" "$guest_mib" "$live_runs" "$kvm_kind" <<'PY' || true
import json, os, socket, statistics, sys, time
sock_path, out, mib, guest_mib, runs, kind = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
row = {"bench": "snapshot", "vmm": "qemu", "mode": "background", "mem_mib": mib,
       "guest_mib": guest_mib, "kvm": kind, "runs": runs}
try:
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    f = s.makefile("rw")
    def cmd(name, args=None):
        msg = {"execute": name}
        if args is not None:
            msg["arguments"] = args
        f.write(json.dumps(msg) + "\n"); f.flush()
        while True:
            r = json.loads(f.readline())
            if "return" in r or "error" in r:
                if "error" in r:
                    raise RuntimeError("%s: %s" % (name, r["error"].get("desc")))
                return r["return"]
    json.loads(f.readline())  # greeting
    cmd("qmp_capabilities")
    cmd("migrate-set-capabilities",
        {"capabilities": [{"capability": "background-snapshot", "state": True}]})
    cmd("migrate-set-parameters", {"max-bandwidth": 1 << 40})
    downtime, total = [], []
    for _ in range(runs):
        cmd("migrate", {"uri": "exec:cat > " + out})
        while True:
            st = cmd("query-migrate")
            if st.get("status") == "completed":
                break
            if st.get("status") in ("failed", "cancelled"):
                raise RuntimeError("background snapshot %s: %s" %
                                   (st.get("status"), st.get("error-desc", "")))
            time.sleep(0.005)
        if "downtime" not in st:
            raise RuntimeError("query-migrate reported no downtime: %s" % json.dumps(st))
        downtime.append(st["downtime"])
        total.append(st.get("total-time", 0))
        os.unlink(out)
    row["pause_ms_p50"] = statistics.median(downtime)
    row["pause_ms_all"] = downtime
    row["total_ms_p50"] = statistics.median(total)
    cmd("quit")
except Exception as e:
    row["error"] = str(e)
print(json.dumps(row))
PY
	kill $qpid 2>/dev/null || true
	wait $qpid 2>/dev/null || true
	rm -f "$tmpfs_dir/qemu-bg"
}

for mib in $sizes; do
	want stop || want live || want qemubg || break
	# A touch region is contiguous and RAM splits at 3 GiB (the MMIO hole), so
	# above 2 GiB both vCPUs touch half each, one half above 4 GiB.
	if [ "$mib" -gt 2048 ]; then
		guest_mib=$((3072 + mib / 2 + 256))
		append="work=touch,touch touch_mib=$((mib / 2))"
	else
		guest_mib=$((mib + 256))
		append="work=touch,idle touch_mib=$mib"
	fi
	log "forkd: ${mib} MiB touched in a ${guest_mib} MiB guest ($append)"
	boot_probe "$guest_mib" "$append"
	wait_for "$work/serial.log" "^DONE" 300
	if grep -q "error=" "$work/serial.log"; then
		log "probe failed: $(grep "error=" "$work/serial.log" | head -1)"
		exit 1
	fi
	if want stop; then
		snapshot_one tmpfs "$tmpfs_dir" "$mib" keep
		restore_bench "$tmpfs_dir/snap" "$mib" "$guest_mib"
		rm -rf "$tmpfs_dir/snap"
		snapshot_one disk "$disk_dir" "$mib" drop
	fi
	if want live; then
		live_bench "$tmpfs_dir" "$mib"
	fi
	stop_probe
	if want qemubg; then
		qemu_background "$mib" "$guest_mib" "$append"
	fi
done

# fanout: 100 children of one 256 MiB snapshot on disk, all answering `pong`: cold (page
# cache dropped) and prewarmed (dropped, then `forkd snapshot prewarm`), in the same run.
# "ms" is the whole wall time (prewarm included) until the last child answered.
fanout_run() { # SNAP PREWARM(true|false)
	local snap=$1 prewarm=$2 pw_json='{}'
	sync
	echo 3 >/proc/sys/vm/drop_caches
	if [ "$prewarm" = true ]; then
		pw_json=$($forkd snapshot prewarm --json "$snap")
	fi
	python3 - "$forkd" "$snap" "$work/fanout" "$fanout_n" "$fanout_mib" "$prewarm" "$pw_json" "$kvm_kind" <<'PY'
import json, os, subprocess, sys, time
forkd, snap, out, n, guest_mib = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
prewarm, pw, kind = sys.argv[6] == "true", json.loads(sys.argv[7]), sys.argv[8]
tick = os.sysconf("SC_CLK_TCK")
row = {"bench": "snapshot", "op": "fanout", "n": n, "prewarm": prewarm, "guest_mib": guest_mib,
       "kvm": kind}
if prewarm:
    row["prewarm_ms"] = round(pw.get("prewarm_us", 0) / 1e3, 1)
    row["prewarm_mib"] = round(pw.get("data_bytes", 0) / 1048576, 1)
    row["prewarm_mib_per_s"] = round(pw.get("mib_per_s", 0), 0)
t0 = time.monotonic() - row.get("prewarm_ms", 0) / 1e3
spawn = subprocess.run([forkd, "spawn", snap, "-n", str(n), "--out", out, "--timeout", "120000"],
                       stdout=subprocess.PIPE, text=True)
if spawn.returncode != 0:
    row["error"] = "forkd spawn exited %d" % spawn.returncode
    print(json.dumps(row))
    sys.exit(0)
summary = json.loads(spawn.stdout.strip().splitlines()[-1])
children = [os.path.join(out, "child-%d" % i) for i in range(n)]
for c in children:
    fd = os.open(os.path.join(c, "serial.in"), os.O_WRONLY | os.O_NONBLOCK)
    os.write(fd, b"ping\n")
    os.close(fd)
pending = set(children)
deadline = time.monotonic() + 120
while pending and time.monotonic() < deadline:
    for c in list(pending):
        try:
            with open(os.path.join(c, "serial.log"), "rb") as f:
                if b"pong" in f.read():
                    pending.discard(c)
        except FileNotFoundError:
            pass
    time.sleep(0.002)
row["ms"] = round((time.monotonic() - t0) * 1e3, 1)
row["all_running_ms"] = summary["all_running_ms"]
# CPU each child's VMM has used so far (user + system, its threads): the cost 2 cores share.
cpu, pss = [], []
for c in children:
    pid = int(open(os.path.join(c, "pid")).read())
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    cpu.append((int(f[11]) + int(f[12])) * 1000 / tick)
    for line in open("/proc/%d/smaps_rollup" % pid):
        if line.startswith("Pss:"):
            pss.append(int(line.split()[1]) / 1024)
row["cpu_ms_per_child"] = round(sum(cpu) / len(cpu), 1)
row["pss_per_child_mib"] = round(sum(pss) / len(pss), 2)
if pending:
    row["error"] = "%d children did not answer pong within 120 s" % len(pending)
print(json.dumps(row))
PY
	$forkd kill "$work/fanout" >/dev/null
	rm -rf "$work/fanout"
}

fanout() {
	local snap=$disk_dir/fanout-snap guest_mib=$fanout_mib
	log "fan-out: $fanout_n children of an idle ${guest_mib} MiB probe, snapshot on disk, cold and prewarmed"
	boot_probe "$guest_mib" "work=idle,idle"
	wait_for "$work/serial.log" "^READY" 60
	$forkd vm call --socket "$work/vm.sock" --timeout 60000 \
		"{\"cmd\":\"snapshot\",\"path\":\"$snap\",\"mode\":\"stop\",\"resume\":false}" >/dev/null
	stop_probe
	for run in $(seq 1 "${FANOUT_RUNS:-1}"); do
		fanout_run "$snap" false
		fanout_run "$snap" true
	done
	rm -rf "$snap"
}
if want fanout; then fanout; fi

# QEMU: stop, migrate to a file, wait for completion. Migration bandwidth is
# unlimited so the pause measures QEMU's save path, not its default throttle.
# run-qemu.sh's +invtsc blocks migration, so the CPU is given again without it
# (the probe then takes the TSC frequency from kvmclock).
qemu_snapshot() { # MIB TARGET DIR
	local mib=$1 target=$2 dir=$3 qpid
	log "qemu: ${mib} MiB touched, to $target"
	rm -f "$work/qmp.sock"
	guest/probe/run-qemu.sh "$probe" "$((mib + 256))M" 2 "work=touch,idle touch_mib=$mib" -- \
		-cpu host,-arch-capabilities -qmp "unix:$work/qmp.sock,server,nowait" </dev/null >"$work/qemu.log" 2>"$work/qemu.err" &
	qpid=$!
	if ! wait_for "$work/qemu.log" "cpu0.done=touch" 300; then
		echo "{\"bench\":\"snapshot\",\"vmm\":\"qemu\",\"target\":\"$target\",\"mem_mib\":$mib,\"error\":\"no cpu0.done=touch: $(head -c 200 "$work/qemu.err" | tr '\n"' ' _')\"}"
		kill $qpid 2>/dev/null || true
		wait $qpid 2>/dev/null || true
		return 0
	fi
	python3 - "$work/qmp.sock" "$dir/qemu-state" "$target" "$mib" <<'PY' || true
import json, socket, sys, time
sock_path, out, target, mib = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
row = {"bench": "snapshot", "vmm": "qemu", "target": target, "mem_mib": mib}
try:
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    f = s.makefile("rw")
    def cmd(name, args=None):
        msg = {"execute": name}
        if args is not None:
            msg["arguments"] = args
        f.write(json.dumps(msg) + "\n"); f.flush()
        while True:
            r = json.loads(f.readline())
            if "return" in r or "error" in r:
                if "error" in r:
                    raise RuntimeError("%s: %s" % (name, r["error"].get("desc")))
                return r["return"]
    json.loads(f.readline())  # greeting
    cmd("qmp_capabilities")
    cmd("migrate-set-parameters", {"max-bandwidth": 1 << 40})
    t0 = time.monotonic()
    cmd("stop")
    cmd("migrate", {"uri": "exec:cat > " + out})
    while True:
        st = cmd("query-migrate")
        if st.get("status") == "completed":
            break
        if st.get("status") in ("failed", "cancelled"):
            raise RuntimeError("migration %s: %s" % (st.get("status"), st.get("error-desc", "")))
        time.sleep(0.002)
    row["pause_ms"] = round((time.monotonic() - t0) * 1e3, 2)
    row["qemu_total_ms"] = st.get("total-time")
    cmd("quit")
except Exception as e:
    row["error"] = str(e)
print(json.dumps(row))
PY
	kill $qpid 2>/dev/null || true
	wait $qpid 2>/dev/null || true
	rm -f "$dir/qemu-state"
}

for mib in $qemu_sizes; do
	want qemu || break
	qemu_snapshot "$mib" tmpfs "$tmpfs_dir"
	qemu_snapshot "$mib" disk "$disk_dir"
done
