#!/usr/bin/env bash
# BRANCH of a VM with a writable disk: the pause against the background copy of
# the disk that follows it (devices/disk_copy.h), on the probe guest, which runs
# natively on hardware KVM and KVM-PVM. One JSON line per BRANCH:
#   {"bench":"branch","op":"writable_disk","host":H,"disk_mib":N,"run":K,
#    "pause_us":..,"capture_us":..,"disk_copy_us":..}
# and, as the peer in the same run, what copying that disk inside the pause
# (as forkd did before) would have added, measured as a plain copy of the file:
#   {"bench":"branch","op":"disk_copy_in_pause_equivalent","host":H,"disk_mib":N,"copy_ms":..}
#
#   bench/disk_branch.sh [DISK_MIB] [RUNS]        (defaults 256 5)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/kvm-kind.sh
. scripts/kvm-kind.sh
mib=${1:-256}
runs=${2:-5}
[[ "$mib" =~ ^[1-9][0-9]{0,4}$ ]] || { echo "bench/disk_branch.sh: DISK_MIB '$mib': expected 1..99999" >&2; exit 2; }
[[ "$runs" =~ ^[1-9][0-9]?$ ]] || { echo "bench/disk_branch.sh: RUNS '$runs': expected 1..99" >&2; exit 2; }

if [ -z "${FORKD_BENCH_INSIDE:-}" ]; then
	make -s -j2 build/forkd-vmm build/forkd probe >&2
	if [ "$(kvm_kind)" = none ]; then
		echo "bench/disk_branch.sh: no usable /dev/kvm: running in the nested test host" >&2
		FORKD_BENCH_INSIDE=1 exec scripts/testhost.sh -- bench/disk_branch.sh "$mib" "$runs"
	fi
fi
host=native
[ -n "${FORKD_TESTHOST_KIND:-}" ] && host="nested-$FORKD_TESTHOST_KIND"
work=$(mktemp -d "${TMPDIR:-/tmp}/forkd-bench-disk.XXXXXX")
vmm_pid=
cleanup() {
	if [ -n "$vmm_pid" ] && kill "$vmm_pid" 2>/dev/null; then wait "$vmm_pid" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

field() { sed -n "s/.*\"$1\": *\([0-9]*\).*/\1/p" <<<"$2" | head -n1; }

# Dense random data: no holes for the copy to skip.
head -c "$((mib << 20))" /dev/urandom >"$work/disk.img"
t0=$(date +%s%N)
cp --reflink=never "$work/disk.img" "$work/peer.img"
t1=$(date +%s%N)
rm -f "$work/peer.img"
echo "{\"bench\":\"branch\",\"op\":\"disk_copy_in_pause_equivalent\",\"host\":\"$host\",\"disk_mib\":$mib,\"copy_ms\":$(((t1 - t0) / 1000000))}"

build/forkd-vmm --kernel build/guest/probe.elf --mem 256M --cpus 1 --append work=idle \
	--disk "$work/disk.img" --control "$work/c.sock" --serial "$work/console.log" --serial-in none \
	2>"$work/err" &
vmm_pid=$!
for _ in $(seq 1 200); do grep -q DONE "$work/console.log" 2>/dev/null && break; sleep 0.05; done
grep -q DONE "$work/console.log" || { echo "bench/disk_branch.sh: the probe guest did not start:" >&2; cat "$work/err" >&2; exit 1; }
for k in $(seq 1 "$runs"); do
	r=$(build/forkd vm call --socket "$work/c.sock" --timeout 300000 "{\"cmd\":\"branch\",\"n\":1,\"dir\":\"$work/b$k\"}")
	echo "{\"bench\":\"branch\",\"op\":\"writable_disk\",\"host\":\"$host\",\"disk_mib\":$mib,\"run\":$k,\"pause_us\":$(field pause_us "$r"),\"capture_us\":$(field capture_us "$r"),\"disk_copy_us\":$(field disk_copy_us "$r")}"
	build/forkd vm shutdown --socket "$work/b$k/child-0/control.sock" >/dev/null 2>&1 || true
	build/forkd vm call --socket "$work/c.sock" "{\"cmd\":\"zygote\",\"action\":\"release\",\"id\":$(field zygote "$r")}" >/dev/null
	rm -rf "$work/b$k"
done
