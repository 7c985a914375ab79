#!/usr/bin/env bash
# Builds the Linux guest boot images from Debian packages, into a cache:
#   vmlinux         the uncompressed kernel (PVH entry), extracted from the bzImage
#   bzImage         the package's vmlinuz as is (64-bit Linux boot protocol)
#   initramfs.cpio  uncompressed newc: /init = forkd-init, busybox, the virtio/vsock modules,
#                   /usr/bin/forkd-pattern (the point-in-time checker)
#   testhost-initramfs.cpio  the nested test host's (scripts/testhost.sh): forkd-init,
#                   busybox, virtio-pci, virtiofs and KVM modules, /etc/testhost-init.sh
#   config          the kernel's config
# The kernel package is downloaded with `apt-get download` and unpacked with
# `dpkg-deb -x`: nothing is installed on the host. A stamp records the inputs;
# nothing is rebuilt while they are unchanged.
#
# Environment:
#   FORKD_IMAGES_DIR  cache directory (default: <repo>/.cache/images)
#   FORKD_BUILD       build directory with tools/extract-vmlinux and guest/forkd-init (<repo>/build)
#   FORKD_KERNEL_PKG  kernel package (default: the pinned one below; "latest" follows
#                     linux-image-cloud-amd64)
#   FORKD_KERNEL_DEB  use this local .deb instead of downloading
#   FORKD_BUSYBOX     static busybox binary (default /bin/busybox from busybox-static)
#   FORKD_IMAGES_FORCE=1  rebuild even if the stamp matches
set -euo pipefail

# Known good: PVH note, KERNEL_LZ4, virtio_mmio/virtio_blk/vsock as modules.
PINNED_KERNEL_PKG=linux-image-6.1.0-50-cloud-amd64-unsigned
# What the initramfs loads; dependencies are added from the package's metadata.
WANTED_MODULES=(virtio virtio_ring virtio_mmio virtio_blk vsock vmw_vsock_virtio_transport_common
	vmw_vsock_virtio_transport failover net_failover virtio_net ext4 overlay)
# The nested test host (L1): virtio-pci, virtiofs for the machine's root, the
# serial console, and KVM (kvm_amd under QEMU's TCG; kvm_intel too for -accel kvm); tun and
# veth for the network tests' taps and namespace links (docs/net-device.md).
TESTHOST_MODULES=(virtio_pci virtiofs irqbypass kvm kvm_amd kvm_intel tun veth)
# VM network namespaces' nftables rules (src/net/nft.c: NAT, conntrack, reject) in the nested host
TESTHOST_MODULES+=(nf_tables nf_conntrack nf_nat nft_chain_nat nft_nat nft_masq nft_ct nft_reject
	nft_reject_ipv4 nf_reject_ipv4)
REQUIRED_CONFIG=(CONFIG_PVH=y CONFIG_BLK_DEV_INITRD=y CONFIG_DEVTMPFS=y CONFIG_MODULES=y
	CONFIG_ACPI=y CONFIG_SERIAL_8250_CONSOLE=y)

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${FORKD_IMAGES_DIR:-$repo/.cache/images}
build=${FORKD_BUILD:-$repo/build}
busybox=${FORKD_BUSYBOX:-/bin/busybox}
extract=$build/tools/extract-vmlinux
init=$build/guest/forkd-init
checker=$build/guest/forkd-pattern
agent=$build/guest/forkd-agent

die() {
	echo "images: error: $*" >&2
	exit 1
}
log() { echo "images: $*" >&2; }

for tool in apt-get apt-cache dpkg-deb cpio objcopy sha256sum; do
	command -v "$tool" >/dev/null || die "'$tool' not found (scripts/install-deps.sh installs what is needed)"
done
[ -x "$extract" ] || die "$extract missing: run 'make $extract' first (or 'make images')"
[ -x "$init" ] || die "$init missing: run 'make $init' first (or 'make images')"
[ -x "$checker" ] || die "$checker missing: run 'make $checker' first (or 'make images')"
[ -x "$agent" ] || die "$agent missing: run 'make $agent' first (or 'make images')"
[ -x "$busybox" ] || die "$busybox missing: install busybox-static or set FORKD_BUSYBOX"
if readelf -l "$busybox" 2>/dev/null | grep -q INTERP; then
	die "$busybox is dynamically linked; the initramfs needs a static one (busybox-static)"
fi
if readelf -l "$init" 2>/dev/null | grep -q INTERP; then
	die "$init is dynamically linked; forkd-init must be static"
fi
mkdir -p "$cache"

# Package and version.
pkg_version() { apt-cache show --no-all-versions "$1" 2>/dev/null | sed -n 's/^Version: //p' | head -n1; }
if [ -n "${FORKD_KERNEL_DEB:-}" ]; then
	deb=$(realpath "$FORKD_KERNEL_DEB") || die "$FORKD_KERNEL_DEB: no such file"
	pkg=$(dpkg-deb -f "$deb" Package 2>/dev/null) || die "$deb: not a readable .deb (dpkg-deb -f failed)"
	version=$(dpkg-deb -f "$deb" Version)
else
	pkg=${FORKD_KERNEL_PKG:-$PINNED_KERNEL_PKG}
	if [ "$pkg" = latest ] || [ -z "$(pkg_version "$pkg")" ]; then
		[ "$pkg" = latest ] || log "$pkg is not in the apt lists; following linux-image-cloud-amd64"
		dep=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | sed -n 's/^ *Depends: //p' | grep '^linux-image-' | head -n1)
		[ -n "$dep" ] || die "cannot resolve linux-image-cloud-amd64 (run apt-get update?)"
		# The -unsigned twin has the same kernel without the Secure Boot signature.
		if [ -n "$(pkg_version "$dep-unsigned")" ]; then pkg=$dep-unsigned; else pkg=$dep; fi
	fi
	version=$(pkg_version "$pkg")
	[ -n "$version" ] || die "package $pkg not found by apt-cache (run apt-get update?)"
	deb=$cache/${pkg}_${version//:/%3a}_amd64.deb
fi

# Up to date?
input_hash() {
	{
		echo "$pkg $version"
		sha256sum "${BASH_SOURCE[0]}" "$init" "$extract" "$busybox" "$checker" "$agent" \
			"$repo/images/testhost-init.sh" | cut -d' ' -f1
		echo "${WANTED_MODULES[*]} / ${TESTHOST_MODULES[*]}"
	} | sha256sum | cut -d' ' -f1
}
stamp="pkg=$pkg version=$version inputs=$(input_hash)"
outputs=("$cache/vmlinux" "$cache/bzImage" "$cache/initramfs.cpio" "$cache/testhost-initramfs.cpio"
	"$cache/config")
print_outputs() {
	echo "kernel package: $pkg $version"
	echo "vmlinux:   $cache/vmlinux"
	echo "bzImage:   $cache/bzImage"
	echo "initramfs: $cache/initramfs.cpio"
	echo "test host initramfs: $cache/testhost-initramfs.cpio"
}
up_to_date=1
for f in "${outputs[@]}"; do [ -s "$f" ] || up_to_date=0; done
if [ "$up_to_date" = 1 ] && [ "${FORKD_IMAGES_FORCE:-0}" != 1 ] &&
	[ "$(cat "$cache/stamp" 2>/dev/null)" = "$stamp" ]; then
	log "up to date"
	print_outputs
	exit 0
fi

# Download, checked against the archive's SHA256 (apt-cache shows it).
if [ -z "${FORKD_KERNEL_DEB:-}" ]; then
	want_sha=$(apt-cache show --no-all-versions "$pkg" | sed -n 's/^SHA256: //p' | head -n1)
	if [ -f "$deb" ] && [ "$(sha256sum "$deb" | cut -d' ' -f1)" != "$want_sha" ]; then
		log "$deb does not match the archive's SHA256; downloading it again"
		rm -f "$deb"
	fi
	if [ ! -f "$deb" ]; then
		log "downloading $pkg $version"
		dl=$(mktemp -d "$cache/download.XXXXXX")
		# apt drops to the _apt user to download; let it write here.
		if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$dl"; fi
		(cd "$dl" && apt-get download -q "$pkg=$version") >&2 ||
			{ rm -rf "$dl"; die "apt-get download $pkg=$version failed"; }
		got=$(find "$dl" -name '*.deb' | head -n1)
		[ -n "$got" ] || { rm -rf "$dl"; die "apt-get download $pkg produced no .deb"; }
		mv "$got" "$deb"
		rm -rf "$dl"
	fi
	if [ -n "$want_sha" ] && [ "$(sha256sum "$deb" | cut -d' ' -f1)" != "$want_sha" ]; then
		die "$deb: SHA256 does not match the archive's ($want_sha): corrupt download"
	fi
fi

# Unpack (never install) and check what we need is there.
work=$(mktemp -d "$cache/work.XXXXXX")
trap 'rm -rf "$work"' EXIT
pkgroot=$work/pkg
mkdir -p "$pkgroot"
dpkg-deb -x "$deb" "$pkgroot" 2>"$work/dpkg.err" ||
	die "$deb: dpkg-deb -x failed (truncated or corrupt package?): $(tr '\n' ' ' <"$work/dpkg.err")"

vmlinuz=$(find "$pkgroot/boot" -maxdepth 1 -name 'vmlinuz-*' 2>/dev/null | head -n1)
[ -n "$vmlinuz" ] || die "$deb: no boot/vmlinuz-* inside"
kver=${vmlinuz##*/vmlinuz-}
config=$pkgroot/boot/config-$kver
moddir=$pkgroot/lib/modules/$kver
missing=()
[ -f "$config" ] || missing+=("boot/config-$kver")
[ -d "$moddir/kernel" ] || missing+=("lib/modules/$kver/kernel/")
[ ${#missing[@]} -eq 0 ] || die "$deb: missing ${missing[*]}"

bad_config=()
for opt in "${REQUIRED_CONFIG[@]}"; do grep -qx "$opt" "$config" || bad_config+=("$opt"); done
[ ${#bad_config[@]} -eq 0 ] || die "$config: kernel lacks ${bad_config[*]}"
grep -qx CONFIG_KERNEL_LZ4=y "$config" ||
	die "$config: not CONFIG_KERNEL_LZ4=y; extract-vmlinux reads LZ4 payloads only"

# Modules: find each (possibly compressed), skip built-ins, add dependencies
# depth-first so the list is in load order.
declare -A mod_path=() mod_state=()
while IFS= read -r -d '' f; do
	name=${f##*/}
	name=${name%%.ko*}
	mod_path[${name//-/_}]=$f
done < <(find "$moddir/kernel" -name '*.ko*' -print0)
declare -A builtin=()
if [ -f "$moddir/modules.builtin" ]; then
	while read -r line; do
		name=${line##*/}
		name=${name%%.ko*}
		builtin[${name//-/_}]=1
	done <"$moddir/modules.builtin"
fi

mkdir -p "$work/mods"
# Uncompressed copy of a module (the initramfs stores .ko; finit_module needs no decompressor).
plain_module() {
	local src=$1 name=$2 out=$work/mods/$2.ko
	case "$src" in
	*.ko) cp "$src" "$out" ;;
	*.ko.xz) command -v xz >/dev/null || die "xz needed for $src"; xz -dc "$src" >"$out" || die "$src: xz failed" ;;
	*.ko.zst) command -v zstd >/dev/null || die "zstd needed for $src"; zstd -qdc "$src" >"$out" || die "$src: zstd failed" ;;
	*.ko.gz) gzip -dc "$src" >"$out" || die "$src: gzip failed" ;;
	*) die "$src: unknown module format" ;;
	esac
	echo "$out"
}
module_depends() { # from the .modinfo section (modules.dep only exists after depmod)
	objcopy -O binary --only-section=.modinfo "$1" /dev/stdout 2>/dev/null | tr '\0' '\n' |
		sed -n 's/^depends=//p' | tr ',' ' '
}
visit() {
	local name=${1//-/_} dep
	case "${mod_state[$name]:-}" in
	done) return ;;
	active) die "module dependency cycle through $name" ;;
	esac
	if [ -n "${builtin[$name]:-}" ]; then
		mod_state[$name]=done
		return
	fi
	if [ -z "${mod_path[$name]:-}" ]; then
		missing+=("$name")
		mod_state[$name]=done
		return
	fi
	mod_state[$name]=active
	local plain
	plain=$(plain_module "${mod_path[$name]}" "$name")
	for dep in $(module_depends "$plain"); do visit "$dep"; done
	mod_state[$name]=done
	order+=("$name")
}
# resolve_modules WHAT NAME...: sets `order` to NAME... and their dependencies, in load order.
resolve_modules() {
	local what=$1 m
	shift
	order=()
	missing=()
	mod_state=()
	for m in "$@"; do visit "$m"; done
	[ ${#missing[@]} -eq 0 ] ||
		die "$deb: $what modules not found (neither built in nor under lib/modules/$kver/kernel): ${missing[*]}"
}

# vmlinux, checked for the PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY = 18).
"$extract" "$vmlinuz" "$work/vmlinux" >/dev/null || die "extracting vmlinux from $vmlinuz failed"
readelf -n "$work/vmlinux" | grep -A1 '^ *Xen ' | grep -q '(0x00000012)' ||
	die "$work/vmlinux: no Xen PHYS32_ENTRY note: this kernel cannot boot through PVH"

# build_initramfs OUT ROOT: an uncompressed newc archive of forkd-init, busybox and
# the modules in `order`; ROOT may already hold extra files.
build_initramfs() {
	local out=$1 root=$2 m applet list
	mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,root,etc,lib/modules/"$kver"}
	chmod 1777 "$root/tmp"
	cp "$init" "$root/init"
	cp "$busybox" "$root/bin/busybox"
	while read -r applet; do
		[ "$applet" = bin/busybox ] && continue
		mkdir -p "$root/$(dirname "$applet")"
		[ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
	done < <("$busybox" --list-full)
	[ -L "$root/bin/sh" ] || die "$busybox has no sh applet"
	list=$root/lib/modules/forkd.list
	echo "# load order for forkd-init (generated by images/build.sh)" >"$list"
	for m in "${order[@]}"; do
		cp "$work/mods/$m.ko" "$root/lib/modules/$kver/$m.ko"
		echo "/lib/modules/$kver/$m.ko" >>"$list"
	done
	echo "root:x:0:0:root:/root:/bin/sh" >"$root/etc/passwd"
	echo "root:x:0:" >"$root/etc/group"
	(cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
		cpio --quiet -o -H newc -R 0:0 --reproducible >"$out") ||
		die "cpio failed building $out"
}

# The Linux guest's initramfs, with the point-in-time checker and the guest
# agent (forkd-init starts it when the command line has forkd.agent=1).
resolve_modules "guest" "${WANTED_MODULES[@]}"
guest_order=("${order[@]}")
mkdir -p "$work/root/usr/bin" "$work/root/usr/sbin"
cp "$checker" "$work/root/usr/bin/forkd-pattern"
cp "$agent" "$work/root/usr/sbin/forkd-agent"
build_initramfs "$work/initramfs.cpio" "$work/root"

# The nested test host's initramfs (scripts/testhost.sh): KVM, virtiofs and its
# set-up script, run by forkd-init as the command.
resolve_modules "nested test host (KVM, virtiofs)" "${TESTHOST_MODULES[@]}"
testhost_order=("${order[@]}")
mkdir -p "$work/testhost-root/etc"
cp "$repo/images/testhost-init.sh" "$work/testhost-root/etc/testhost-init.sh"
build_initramfs "$work/testhost-initramfs.cpio" "$work/testhost-root"

# Publish: each output replaced by rename, the stamp last.
cp "$vmlinuz" "$work/bzImage"
cp "$config" "$work/config"
for f in vmlinux bzImage initramfs.cpio testhost-initramfs.cpio config; do
	sync "$work/$f" 2>/dev/null || true
	mv -f "$work/$f" "$cache/$f"
done
echo "$stamp" >"$cache/stamp.tmp" && mv -f "$cache/stamp.tmp" "$cache/stamp"
log "guest modules (load order): ${guest_order[*]}"
log "test host modules (load order): ${testhost_order[*]}"
print_outputs
