#!/bin/sh
# Boots the probe guest in QEMU's microvm machine with KVM, COM1 on stdio.
#
#   guest/probe/run-qemu.sh PROBE_ELF [MEM [CPUS [APPEND [DISK]]]] [-- QEMU_ARGS...]
#
#   PROBE_ELF  build/guest/probe.elf
#   MEM        guest RAM as QEMU's -m takes it (default 256M)
#   CPUS       vCPUs (default 1)
#   APPEND     probe command line, e.g. "work=idle,touch then=poweroff"
#   DISK       raw image attached as the first virtio-blk (virtio-mmio) device
#
# The guest's poweroff and reboot both end QEMU (-no-reboot). QEMU needs
# -arch-capabilities on this hypervisor (setting MSR 0x10a aborts), and
# +invtsc makes it publish the TSC frequency in CPUID 0x40000010. Environment:
# QEMU (binary, default qemu-system-x86_64), QEMU_DISK_RO=1 attaches DISK read-only.
set -eu

usage() {
	sed -n '2,15s/^# \{0,1\}//p' "$0" >&2
	exit 2
}

[ $# -ge 1 ] || usage
elf=$1
shift
mem=256M
cpus=1
append=""
disk=""
for var in mem cpus append disk; do
	[ $# -ge 1 ] || break
	[ "$1" = "--" ] && break
	eval "$var=\$1"
	shift
done
[ $# -ge 1 ] && [ "$1" = "--" ] && shift

[ -r "$elf" ] || { echo "run-qemu.sh: cannot read probe ELF '$elf'" >&2; exit 2; }

set -- -M microvm,acpi=on,rtc=off,pic=off,pit=off,isa-serial=on \
	-enable-kvm -cpu "${QEMU_CPU:-host,-arch-capabilities,+invtsc}" \
	-m "$mem" -smp "$cpus" \
	-nodefaults -no-user-config -nographic -no-reboot \
	-serial stdio \
	-global virtio-mmio.force-legacy=false \
	-kernel "$elf" -append "$append" "$@"
if [ -n "$disk" ]; then
	ro=""
	[ "${QEMU_DISK_RO:-0}" = 1 ] && ro=",readonly=on"
	set -- "$@" -drive "id=d0,file=$disk,format=raw,if=none$ro" \
		-device virtio-blk-device,drive=d0
fi
exec "${QEMU:-qemu-system-x86_64}" "$@"
