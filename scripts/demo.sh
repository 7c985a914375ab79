#!/usr/bin/env bash
# The forkd demo, on a fresh Debian machine with /dev/kvm: installs the build
# dependencies, builds forkd-vmm and the probe guest, boots the probe on two
# vCPUs with a memory-writing workload, BRANCHes it into three children that
# continue from one instant while the source runs on, and shows each child
# proving from inside that its memory is the source's at that instant.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
make -s -j2 build/forkd-vmm build/forkd probe

work=$(mktemp -d /tmp/forkd-demo.XXXXXX)
sock=$work/source.sock
cleanup() {
	for s in "$work"/branch/child-*/control.sock "$sock"; do
		[ -S "$s" ] && build/forkd vm shutdown --socket "$s" >/dev/null 2>&1 || true
	done
	sleep 0.3
	rm -rf "$work"
}
trap cleanup EXIT

echo "== boot: probe guest, 2 vCPUs, 1 GiB; cpu0 and cpu1 write memory in a known sequence"
build/forkd-vmm --kernel build/guest/probe.elf --cpus 2 --mem 1G --control "$sock" \
	--serial "$work/source.log" --serial-in none \
	--append "work=pattern,pattern pattern_mib=64 pattern_freeze=genid" &
for _ in $(seq 1 200); do grep -q '^DONE' "$work/source.log" 2>/dev/null && break; sleep 0.05; done
grep -E '^READY' "$work/source.log"
sleep 0.5

echo "== branch: 3 children continue from this instant; the source runs on"
build/forkd vm call --socket "$sock" "{\"cmd\":\"branch\",\"n\":3,\"dir\":\"$work/branch\"}" |
	grep -E '"(pause_us|park_us|capture_us|fork_us|pid)"'

echo "== each child: its own generation ID; its writers froze at the branch; strict check"
for c in "$work"/branch/child-*/; do
	c=${c%/}
	for _ in $(seq 1 100); do grep -q 'pattern.frozen=1' "$c/serial.log" 2>/dev/null && break; sleep 0.05; done
	echo "verify strict" >"$c/serial.in"
	for _ in $(seq 1 100); do grep -q 'verify.end' "$c/serial.log" 2>/dev/null && break; sleep 0.05; done
	echo "-- $(basename "$c")"
	grep -E '^(genid.changed|cpu[0-9].verify)' "$c/serial.log" | sed 's/^/   /'
done

echo "== the source kept running"
build/forkd vm status --socket "$sock" | grep -E '"(state|uptime_ms)"'
