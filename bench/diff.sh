#!/usr/bin/env bash
# Diff snapshots (docs/diff-snapshots.md): full vs diff persisted BRANCH of a probe guest whose
# memory is all non-zero (cpu0 touches every page once at boot), while cpu1 rewrites DIRTY MiB
# over and over (pattern writer; idle for 0). For each size and amount dirtied: a full persisted
# BRANCH arms dirty tracking, then (after SETTLE_S seconds, enough for the writer to sweep its
# region) a diff persisted BRANCH against it, then a full one at the same point. Rows:
#   {"bench":"diff","mode":"diff"|"full","mem_mib":M,"dirty_mib":N,"dirty_mib_measured":...,
#    "disk_mib":..., "ready_ms":..., "pause_us":..., "collect_us":...}
# disk_mib is what the snapshot directory takes on disk (st_blocks, as du); ready_ms the BRANCH
# request (wait:true) until its snapshot is complete and fsynced.
#
#   bench/diff.sh ["MEM_MIB ..."] ["DIRTY_MIB ..."]   (defaults "1024 4096" and "0 10 100 500")
#
# Snapshots go under /var/tmp/forkd-bench.* (disk) and are deleted after each size. Native
# /dev/kvm only: nested timings are not results.
set -euo pipefail
cd "$(dirname "$0")/.."

sizes=${1:-"1024 4096"}
dirties=${2:-"0 10 100 500"}
settle_s=${SETTLE_S:-3}
kvm_kind=native-$(. scripts/kvm-kind.sh && kvm_kind)
if [ "$kvm_kind" = native-none ]; then
	echo "bench/diff.sh: no native /dev/kvm: nested timings are not results, nothing recorded" >&2
	exit 1
fi

work=$(mktemp -d /tmp/forkd-bench.XXXXXX)
mkdir "$work/bin"
make -s -j2 build/forkd-vmm build/forkd probe >&2
cp build/forkd-vmm build/forkd build/guest/probe.elf "$work/bin/"
vmm=$work/bin/forkd-vmm
forkd=$work/bin/forkd
probe=$work/bin/probe.elf
disk_dir=$(mktemp -d /var/tmp/forkd-bench.XXXXXX)
vm_pid=""

cleanup() {
	if [ -n "$vm_pid" ]; then
		kill "$vm_pid" 2>/dev/null || true
		wait "$vm_pid" 2>/dev/null || true
	fi
	rm -rf "$work" "$disk_dir"
}
trap cleanup EXIT

log() { echo "bench/diff.sh: $*" >&2; }

wait_for() {
	local deadline=$((SECONDS + $3))
	until grep -q "$2" "$1" 2>/dev/null; do
		if [ $SECONDS -ge $deadline ] || ! kill -0 "$vm_pid" 2>/dev/null ||
			grep -q "error=" "$1" 2>/dev/null; then
			log "no '$2' in $1 within $3 s"
			cat "$work/vmm.err" "$1" >&2 || true
			return 1
		fi
		sleep 0.05
	done
}

call() {
	$forkd vm call --socket "$work/vm.sock" --timeout 600000 "$1"
}

# persist MODE MEM DIRTY NAME [PARENT]: one persisted BRANCH (n=0, wait), then its row.
persist() {
	local mode=$1 mem=$2 dirty=$3 path=$disk_dir/$4 parent=${5:-} extra t0 t1 reply
	if [ -n "$parent" ]; then
		extra=",\"parent\":\"$disk_dir/$parent\""
	else
		extra=",\"track_dirty\":true"
	fi
	t0=$(date +%s%N)
	reply=$(call "{\"cmd\":\"branch\",\"n\":0,\"persist\":\"$path\",\"wait\":true$extra}")
	t1=$(date +%s%N)
	# The zygote stays after a persisted BRANCH: release it.
	call "{\"cmd\":\"zygote\",\"action\":\"release\",\"id\":$(echo "$reply" |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["zygote"])')}" >/dev/null
	python3 - "$reply" "$mode" "$mem" "$dirty" "$path" $(((t1 - t0) / 1000)) <<'PY'
import json, os, sys
r = json.loads(sys.argv[1]); path = sys.argv[5]
assert r.get("persist") == "ready", r
disk = sum(os.stat(os.path.join(path, f)).st_blocks * 512 for f in os.listdir(path))
row = {"bench": "diff", "mode": sys.argv[2], "mem_mib": int(sys.argv[3]),
       "dirty_mib": int(sys.argv[4]), "disk_mib": round(disk / 2**20, 2),
       "ready_ms": round(int(sys.argv[6]) / 1000, 1), "pause_us": r["pause_us"],
       "collect_us": r.get("collect_us"), "engine": "persisted-branch", "kvm": os.environ["KIND"],
       "note": "2-core machine shared with other helpers' builds and tests"}
if "dirty_pages" in r:
    row["dirty_mib_measured"] = round(r["dirty_pages"] * 4096 / 2**20, 1)
print(json.dumps(row), flush=True)
PY
}

export KIND=$kvm_kind
for mem in $sizes; do
	for dirty in $dirties; do
		# Most of the rest non-zero; the probe allocates each vCPU's region below the
		# 3 GiB MMIO hole, so at most 2560 MiB of touch.
		touch_mib=$((mem - dirty - 192))
		[ "$touch_mib" -le 2560 ] || touch_mib=2560
		if [ "$dirty" -eq 0 ]; then
			append="work=touch,idle touch_mib=$touch_mib"
		else
			append="work=touch,pattern touch_mib=$touch_mib pattern_mib=$dirty"
		fi
		rm -f "$work/vm.sock" "$work/serial.log"
		$vmm --kernel "$probe" --mem "${mem}M" --cpus 2 --append "$append" \
			--serial "$work/serial.log" --serial-in none --control "$work/vm.sock" \
			2>"$work/vmm.err" &
		vm_pid=$!
		wait_for "$work/serial.log" "cpu0.touch_ok=1" 600
		log "$mem MiB, $dirty MiB dirtied: full (arms tracking), diff, full"
		persist base "$mem" "$dirty" base >/dev/null
		sleep "$settle_s"
		persist diff "$mem" "$dirty" diff base
		sleep "$settle_s"
		persist full "$mem" "$dirty" full
		kill "$vm_pid" 2>/dev/null || true
		wait "$vm_pid" 2>/dev/null || true
		vm_pid=""
		rm -rf "${disk_dir:?}"/*
	done
done
