#!/usr/bin/env bash
# Boot time: the same probe guest ELF booted by forkd-vmm and by QEMU -M microvm,
# RUNS times each, from process start to the guest's READY line. Prints one JSON
# object per run, then one summary per VMM and the ratio.
#
#   bench/boot.sh [RUNS] [MEM_MIB] [CPUS]
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-5}
mem_mib=${2:-256}
cpus=${3:-2}

if ! command -v qemu-system-x86_64 >/dev/null; then
	echo "bench/boot.sh: installing qemu-system-x86 (the peer VMM)" >&2
	apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends qemu-system-x86 >&2
fi
make -s -j2 build/forkd-vmm probe build/bench/readytime >&2

probe=build/guest/probe.elf
append="work=idle"

run_one() { # vmm run
	local vmm=$1 run=$2 fields
	if [ "$vmm" = forkd ]; then
		fields=$(build/bench/readytime --prefix READY --mem-mib "$mem_mib" -- \
			build/forkd-vmm --kernel "$probe" --mem "${mem_mib}M" --cpus "$cpus" \
			--append "$append" --serial-in none)
	else
		fields=$(build/bench/readytime --prefix READY --mem-mib "$mem_mib" -- \
			guest/probe/run-qemu.sh "$probe" "${mem_mib}M" "$cpus" "$append" </dev/null)
	fi
	echo "{\"bench\":\"boot\",\"vmm\":\"$vmm\",\"guest\":\"probe\",\"mem_mib\":$mem_mib,\"cpus\":$cpus,\"run\":$run,$fields}"
}

# Warm the page cache and the host's memory once per VMM, unmeasured.
run_one forkd 0 >/dev/null
run_one qemu 0 >/dev/null

results=$(mktemp)
trap 'rm -f "$results"' EXIT
for run in $(seq 1 "$runs"); do
	# Interleave the two VMMs so host noise hits both alike.
	for vmm in forkd qemu; do
		run_one "$vmm" "$run" | tee -a "$results"
	done
done

# Linux, early boot: process start to the kernel listing our ACPI tables ("ACPI: APIC"), for
# the same Debian vmlinux through PVH in both VMMs. On KVM-PVM both run the kernel in the
# instruction emulator, so this measures the emulator as much as the VMM.
make -s images >&2
vmlinux=.cache/images/vmlinux
linux_append="console=ttyS0 earlyprintk=serial,ttyS0,115200"
for run in $(seq 1 "${LINUX_RUNS:-3}"); do
	for vmm in forkd qemu; do
		if [ "$vmm" = forkd ]; then
			fields=$(build/bench/readytime --contains "ACPI: APIC" --mem-mib 512 --timeout-ms 600000 -- \
				build/forkd-vmm --kernel "$vmlinux" --mem 512M --append "$linux_append" --serial-in none)
		else
			fields=$(build/bench/readytime --contains "ACPI: APIC" --mem-mib 512 --timeout-ms 600000 -- \
				guest/probe/run-qemu.sh "$vmlinux" 512M 1 "$linux_append" </dev/null)
		fi
		echo "{\"bench\":\"boot\",\"vmm\":\"$vmm\",\"guest\":\"linux-early\",\"mem_mib\":512,\"cpus\":1,\"run\":$run,\"emulated\":true,$fields}"
	done
done

python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
summary = {}
for vmm in ("forkd", "qemu"):
    r = [x for x in rows if x["vmm"] == vmm]
    s = {"bench": "boot-summary", "vmm": vmm, "mem_mib": r[0]["mem_mib"], "cpus": r[0]["cpus"],
         "runs": len(r),
         "ready_ms_p50": round(statistics.median(x["ready_ms"] for x in r), 2),
         "vmm_rss_mib_p50": round(statistics.median(x["vmm_rss_mib"] for x in r), 2),
         "vmm_private_mib_p50": round(statistics.median(x["vmm_private_mib"] for x in r), 2)}
    summary[vmm] = s
    print(json.dumps(s))
print(json.dumps({"bench": "boot-ratio",
                  "ready_ms_forkd_over_qemu": round(summary["forkd"]["ready_ms_p50"] / summary["qemu"]["ready_ms_p50"], 3)}))
PY
