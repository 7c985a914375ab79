#!/usr/bin/env bash
# The forkd demo, on a fresh Debian machine (with /dev/kvm, or without: then it
# runs inside the nested test host and says so): installs the build
# dependencies, builds forkd-vmm and the probe guest, boots the probe on two
# vCPUs with a memory-writing workload, BRANCHes it into three children that
# continue from one instant while the source runs on, and shows each child
# proving from inside that its memory is the source's at that instant. Then the
# sandbox (scripts/demo-sandbox.sh): a Linux VM from an image with numpy,
# BRANCHed into 8 children that each compute against the numpy already imported.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/kvm-kind.sh
. scripts/kvm-kind.sh
if [ "${FORKD_DEMO_INSIDE:-0}" != 1 ]; then
	scripts/install-deps.sh
	make -s -j2 build/forkd-vmm build/forkd probe
fi

# Without a usable /dev/kvm, the demo runs inside the nested test host.
if [ "${FORKD_DEMO_INSIDE:-0}" != 1 ] && { [ "$(kvm_kind)" = none ] || [ "${FORKD_TESTHOST:-}" = always ]; }; then
	echo "== this machine has no usable /dev/kvm: running the demo inside the nested test host"
	echo "   (scripts/testhost.sh: QEMU's TCG emulates a CPU with AMD SVM, Debian's kernel loads KVM"
	echo "   there, and forkd-vmm runs unchanged inside; docs/testing.md)"
	make -s images
	out=$(mktemp)
	t0=$(date +%s%N)
	FORKD_DEMO_INSIDE=1 scripts/testhost.sh -- scripts/demo.sh | tee "$out"
	wall_s=$((($(date +%s%N) - t0) / 1000000000))
	pause_us=$(sed -n 's/.*"pause_us": *\([0-9]*\).*/\1/p' "$out" | head -n1)
	rm -f "$out"
	# Native reference: bench/RESULTS.md, BRANCH of a 1 GiB probe on KVM-PVM, p50.
	native_pause_us=1400
	echo "== how much slower the nested host is"
	echo "   whole demo: ${wall_s} s here (boot of the nested host included); natively about 2 s"
	if [ -n "$pause_us" ] && [ "$pause_us" -gt 0 ]; then
		echo "   BRANCH pause: $((pause_us / 1000)).$(((pause_us % 1000) / 100)) ms here vs ~1.4 ms natively" \
			"(bench/RESULTS.md): about $(((pause_us + native_pause_us / 2) / native_pause_us))x slower."
	fi
	echo "   Timings in the nested host measure an emulator, not forkd."
	echo
	scripts/demo-sandbox.sh
	exit 0
fi

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

# The sandbox demo builds its image on this machine first, so it starts from here, not
# from inside the nested host.
if [ "${FORKD_DEMO_INSIDE:-0}" != 1 ]; then
	echo
	cleanup
	trap - EXIT
	scripts/demo-sandbox.sh
fi
