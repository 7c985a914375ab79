#!/usr/bin/env bash
# What the seccomp filters cost on the vCPU exit path (docs/seccomp.md): the probe guest's
# `costs` command times, from inside the guest, exits the VMM process answers (a UART port
# read, a port-0x80 write, an MMIO read of a virtio-mmio window: each one KVM_RUN return and
# one KVM_RUN call through the vCPU thread's filters) and one KVM answers in the kernel (no
# VMM exit: the control). RUNS boots per mode, --seccomp=on and --seccomp=off interleaved,
# each asked for `costs` ROUNDS times (100 exits of each kind per round; a run reports the
# median round). Prints one JSON object per run, then one summary line per mode (medians
# over runs) and the difference. Host load shows up as noise in both modes alike.
# Then the filters' own cost per syscall, with no guest: build/bench/seccomp-syscall times
# ioctl(KVM_RUN) (on /dev/null: ENOTTY at once) under the process and vCPU filters and
# without them, 3 times each, interleaved.
#
#   bench/seccomp.sh [RUNS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-10}
rounds=${2:-20}
make -s -j2 build/forkd-vmm probe build/bench/seccomp-syscall >&2

# shellcheck source=scripts/kvm-kind.sh
. scripts/kvm-kind.sh
kind=$(kvm_kind)
work=$(mktemp -d /tmp/forkd-bench-seccomp.XXXXXX)
vmm_pid=
cleanup() {
	[ -n "$vmm_pid" ] && kill "$vmm_pid" 2>/dev/null && wait "$vmm_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
truncate -s 1M "$work/disk.img"

wait_for() { # file prefix [count]: bounded wait (30 s) for count lines starting with prefix
	for _ in $(seq 1 300); do
		[ "$(grep -c "^$2" "$1" 2>/dev/null)" -ge "${3:-1}" ] && return 0
		sleep 0.1
	done
	echo "bench/seccomp.sh: no '$2' line (x${3:-1}) from the guest in 30 s; console:" >&2
	cat "$1" >&2
	return 1
}

median_field() { # file key: the median of key=N over the file's lines
	grep -o "$2=[0-9]*" "$1" | cut -d= -f2 | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'
}

run_one() { # mode run
	local mode=$1 run=$2 out=$work/serial-$1-$2.log fifo=$work/in-$1-$2 line
	mkfifo "$fifo"
	build/forkd-vmm --kernel build/guest/probe.elf --mem 128M --cpus 1 \
		--disk "$work/disk.img" --append "work=idle" --serial "$out" --serial-in "$fifo" \
		--seccomp="$mode" &
	vmm_pid=$!
	exec 3>"$fifo"
	wait_for "$out" READY
	for round in $(seq 1 "$rounds"); do
		echo costs >&3
		wait_for "$out" costs.line10_ns "$round"
	done
	echo poweroff >&3
	exec 3>&-
	wait "$vmm_pid"
	vmm_pid=
	echo "{\"bench\":\"seccomp\",\"kvm\":\"$kind\",\"seccomp\":\"$mode\",\"run\":$run,\"rounds\":$rounds,\"inb_ns\":$(median_field "$out" costs.inb_ns),\"outb_ns\":$(median_field "$out" costs.outb_ns),\"mmio_vmm_ns\":$(median_field "$out" costs.mmio_vmm_ns),\"mmio_kernel_ns\":$(median_field "$out" costs.mmio_kernel_ns)}"
}

run_one on 0 >/dev/null # warm the page cache, unmeasured
results=$work/results
for run in $(seq 1 "$runs"); do
	for mode in on off; do
		run_one "$mode" "$run" | tee -a "$results"
	done
done

python3 - "$results" "$kind" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = {}
for mode in ("on", "off"):
    r = [x for x in rows if x["seccomp"] == mode]
    med[mode] = {k: statistics.median(x[k] for x in r)
                 for k in ("inb_ns", "outb_ns", "mmio_vmm_ns", "mmio_kernel_ns")}
    m = med[mode]
    print(json.dumps({"bench": "seccomp-summary", "kvm": sys.argv[2], "seccomp": mode,
                      "runs": len(r), **m,
                      "vmm_exits_per_s": round(1e9 / m["mmio_vmm_ns"])}))
d = {k: med["on"][k] - med["off"][k] for k in med["on"]}
print(json.dumps({"bench": "seccomp-cost", "kvm": sys.argv[2],
                  "extra_ns_per_vmm_exit_mmio": d["mmio_vmm_ns"],
                  "extra_ns_per_vmm_exit_pio": d["outb_ns"],
                  "extra_ns_kernel_exit_control": d["mmio_kernel_ns"],
                  "exits_per_s_on": round(1e9 / med["on"]["mmio_vmm_ns"]),
                  "exits_per_s_off": round(1e9 / med["off"]["mmio_vmm_ns"]),
                  "slowdown_pct": round(100 * d["mmio_vmm_ns"] / med["off"]["mmio_vmm_ns"], 1)}))
EOF

for _ in 1 2 3; do
	for mode in on off; do
		build/bench/seccomp-syscall "$mode" 50 | sed "s/^{/{\"kvm\":\"$kind\",/"
	done
done
