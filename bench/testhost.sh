#!/usr/bin/env bash
# The nested test host (scripts/testhost.sh), measured. JSON lines:
#   {"bench":"testhost","op":"boot_to_shell",...}  testhost.sh start -> the command runs (wall),
#                                                   and the L1 kernel's uptime at forkd-init READY
#   {"bench":"testhost","op":"probe_ready",...}    inside L1: forkd-vmm start -> probe READY
#   {"bench":"testhost","op":"linux_ready",...}    inside L1: forkd-vmm start -> Linux forkd-init
#                                                   READY (and the L2 kernel's own uptime)
#   {"bench":"testhost","op":"suite",...}          wall time of `make integration-test` with every
#                                                   binary in the nested host (--suite; ~20 min)
# Every row says "host":"nested-tcg" (or nested-kvm): these are timings of an
# emulated machine, never performance results of forkd.
#
#   bench/testhost.sh [RUNS] [--suite]
set -euo pipefail
cd "$(dirname "$0")/.."

runs=5
suite=0
for a in "$@"; do
	case "$a" in
	--suite) suite=1 ;;
	[0-9]*) runs=$a ;;
	*) echo "bench/testhost.sh: unknown argument '$a' (expected RUNS and/or --suite)" >&2; exit 2 ;;
	esac
done
make -s -j2 build/forkd-vmm probe build/bench/readytime images >/dev/null

median() { sort -n | awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]; else print "null"}'; }
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }
repo=$PWD
# shellcheck source=scripts/kvm-kind.sh
. scripts/kvm-kind.sh
host=nested-$([ "$(kvm_nested_capable)" = yes ] && echo kvm || echo tcg)
images=${FORKD_IMAGES:-$(default_images_dir)}
# In the checkout: the nested host sees only it (and / read-only), not this /tmp.
mkdir -p build
tmp=$(mktemp -d "$PWD/build/bench-testhost.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Boot to shell: the command is `true`; the L1 console says when forkd-init was READY.
walls=() uptimes=()
for run in $(seq 1 "$runs"); do
	t0=$(date +%s%N)
	scripts/testhost.sh --console "$tmp/console.log" -- true
	wall=$(ms_since "$t0")
	up=$(sed -n 's/^READY uptime=\([0-9.]*\).*/\1/p' "$tmp/console.log" | head -n1)
	echo "{\"bench\":\"testhost\",\"op\":\"boot_to_shell\",\"host\":\"$host\",\"run\":$run,\"wall_ms\":$wall,\"l1_ready_uptime_s\":${up:-null}}"
	walls+=("$wall")
	uptimes+=("${up:-0}")
done
echo "{\"bench\":\"testhost\",\"op\":\"boot_to_shell\",\"host\":\"$host\",\"summary\":true,\"runs\":$runs,\"wall_ms_p50\":$(printf '%s\n' "${walls[@]}" | median),\"l1_ready_uptime_s_p50\":$(printf '%s\n' "${uptimes[@]}" | median)}"

# Inside one nested host: probe READY and Linux READY, RUNS times each.
cat >"$tmp/inside.sh" <<EOF
set -e
for run in \$(seq 1 $runs); do
	f=\$(build/bench/readytime --prefix READY --mem-mib 256 -- build/forkd-vmm --kernel build/guest/probe.elf --mem 256M --cpus 2 --append work=idle --serial-in none)
	echo "{\"bench\":\"testhost\",\"op\":\"probe_ready\",\"host\":\"$host\",\"guest\":\"probe\",\"cpus\":2,\"mem_mib\":256,\"run\":\$run,\$f}"
done
for run in \$(seq 1 $runs); do
	f=\$(build/bench/readytime --prefix 'READY uptime=' --mem-mib 512 -- build/forkd-vmm --kernel $images/vmlinux --initrd $images/initramfs.cpio --mem 512M --cpus 2 --append 'console=ttyS0 quiet' --serial-in none)
	echo "{\"bench\":\"testhost\",\"op\":\"linux_ready\",\"host\":\"$host\",\"guest\":\"linux-pvh\",\"cpus\":2,\"mem_mib\":512,\"run\":\$run,\$f}"
done
EOF
scripts/testhost.sh -- bash "$tmp/inside.sh" | tee "$tmp/inside.json"
for op in probe_ready linux_ready; do
	p50=$(grep "\"op\":\"$op\"" "$tmp/inside.json" | sed -n 's/.*"ready_ms":\([0-9.]*\).*/\1/p' | median)
	echo "{\"bench\":\"testhost\",\"op\":\"$op\",\"host\":\"$host\",\"summary\":true,\"runs\":$runs,\"ready_ms_p50\":$p50}"
done

if [ "$suite" = 1 ]; then
	t0=$(date +%s%N)
	FORKD_TESTHOST=always make -s integration-test >"$tmp/suite.log" 2>&1 && ok=true || ok=false
	wall=$(ms_since "$t0")
	counts=$(sed -n 's/^integration: \([0-9]*\) passed, \([0-9]*\) failed$/"passed":\1,"failed":\2/p' "$tmp/suite.log" | tail -n1)
	echo "{\"bench\":\"testhost\",\"op\":\"suite\",\"host\":\"$host\",\"ok\":$ok,\"wall_s\":$((wall / 1000)),${counts:-\"passed\":null}}"
fi
