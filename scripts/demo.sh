#!/usr/bin/env bash
# The forkd demo, on a fresh Debian machine with /dev/kvm: installs the build
# dependencies, builds forkd-vmm and the probe guest, boots the probe on two
# vCPUs with a workload on each, shows its report, and powers it off.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
make -s -j2 build/forkd-vmm probe

disk=$(mktemp /tmp/forkd-demo-disk.XXXXXX)
trap 'rm -f "$disk"' EXIT
head -c 1M /dev/urandom >"$disk"

echo "== forkd-vmm: probe guest, 2 vCPUs, 1 GiB, one virtio-blk disk"
echo "   cpu0 touches 512 MiB, cpu1 reads and writes the disk; then the guest powers off"
set +e
build/forkd-vmm --kernel build/guest/probe.elf --cpus 2 --mem 1G --disk "$disk" \
	--serial-in none \
	--append "work=touch,blk touch_mib=512 blk_write_sector=8 then=poweroff" |
	grep -v '^t '
status=${PIPESTATUS[0]}
set -e
echo "== forkd-vmm exited with status $status (0 = guest powered off)"
echo "== sector 8 of the disk, as the guest wrote it:"
dd if="$disk" bs=512 skip=8 count=1 status=none | head -c 32
echo
exit "$status"
