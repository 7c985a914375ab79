# Sourced by the test scripts: what this machine's /dev/kvm can do.
# Kept in step with fk_kvm_host_probe() in src/util/kvm_host.c.

# none: no usable /dev/kvm; pvm: KVM-PVM (probe guests only: guest CPL0 is
# emulated, a stock Linux kernel cannot run); hardware: VT-x/AMD-V.
kvm_kind() {
	if [ ! -c /dev/kvm ] || ! { : <>/dev/kvm; } 2>/dev/null; then
		echo none
	elif [ -d /sys/module/kvm_pvm ]; then
		echo pvm
	elif [ -d /sys/module/kvm_amd ] || [ -d /sys/module/kvm_intel ]; then
		echo hardware
	else
		echo none
	fi
}

# yes when QEMU can use this machine's KVM for a nested host (-accel kvm)
# whose guests can use KVM again: hardware KVM with nesting on.
kvm_nested_capable() {
	local p
	if [ "$(kvm_kind)" = hardware ]; then
		for p in /sys/module/kvm_amd/parameters/nested /sys/module/kvm_intel/parameters/nested; do
			case "$(cat "$p" 2>/dev/null)" in 1 | Y) echo yes; return ;; esac
		done
	fi
	echo no
}

# size_to_mib 6G -> 6144; accepts K, M, G, T suffixes (binary); fails on anything else.
size_to_mib() {
	local n unit
	[[ "$1" =~ ^([1-9][0-9]{0,8})([KkMmGgTt]?)$ ]] || return 1
	n=${BASH_REMATCH[1]}
	unit=${BASH_REMATCH[2]}
	case "$unit" in
	K | k) echo $((n / 1024)) ;;
	M | m | "") echo "$n" ;;
	G | g) echo $((n * 1024)) ;;
	T | t) echo $((n * 1024 * 1024)) ;;
	esac
}

# Where `make images` puts its output by default (images/images.mk says the same).
default_images_dir() {
	if [ -w /var/cache ]; then echo /var/cache/forkd/images; else echo "$repo/.cache/images"; fi
}
