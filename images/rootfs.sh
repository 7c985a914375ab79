#!/usr/bin/env bash
# Builds root file system images for Linux sandboxes (docs/images.md):
#
#   images/rootfs.sh NAME [--packages p1,p2,...]   build NAME (or reuse it if up to date)
#   images/rootfs.sh --list                         one JSON line per image
#   images/rootfs.sh --rm NAME                      remove an image
#
# An image is Debian (debootstrap --variant=minbase) plus the extra packages
# and the guest agent (/usr/sbin/forkd-agent), as an ext4 file system that the
# guest mounts read-only under a RAM overlay (forkd-init, forkd.root=/dev/vda).
# Nothing else of ours goes in: the initramfs's forkd-init does the boot.
#
# Cache (${FORKD_IMAGE_CACHE:-/var/cache/forkd/rootfs}, else <repo>/.cache/rootfs):
#   NAME/rootfs.ext4, NAME/manifest.json   one folder per image
#   .debootstrap/SUITE-KEY.tgz             debootstrap --make-tarball downloads (suite + packages)
#   .tree/SUITE-KEY.tar                    the installed tree before our changes (same key)
# An image is reused while its input hash (suite, mirror, packages, the agent's
# and this script's sha256) is unchanged; with only the agent changed, the tree
# cache makes a rebuild take seconds. FORKD_ROOTFS_REFRESH=1 ignores both
# tarball caches (to pick up Debian's updates).
#
# Environment: FORKD_DEBIAN_MIRROR (default http://deb.debian.org/debian),
# FORKD_DEBIAN_SUITE (default bookworm), FORKD_BUILD (where guest/forkd-agent
# is; default <repo>/build), FORKD_IMAGE_CACHE.
# Needs root (debootstrap chroots and sets file owners). Progress goes to stderr.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
script=$repo/images/rootfs.sh
suite=${FORKD_DEBIAN_SUITE:-bookworm}
mirror=${FORKD_DEBIAN_MIRROR:-http://deb.debian.org/debian}
build=${FORKD_BUILD:-$repo/build}
agent=$build/guest/forkd-agent
# Bumped when what the tree cache holds changes meaning (it is keyed by this too).
TREE_FORMAT=2

die() {
	echo "rootfs: error: $*" >&2
	exit 1
}
usage() {
	sed -n '2,/^set -euo/p' "$script" | sed 's/^# \{0,1\}//;$d'
}

# The image cache: the environment's; else /var/cache/forkd/rootfs where it
# exists (read-only is fine for reuse: the nested test host sees / read-only)
# or can be made; else inside the checkout.
if [ -n "${FORKD_IMAGE_CACHE:-}" ]; then
	cache=$FORKD_IMAGE_CACHE
elif [ -d /var/cache/forkd/rootfs ] || [ -w /var/cache ]; then
	cache=/var/cache/forkd/rootfs
else
	cache=$repo/.cache/rootfs
fi

valid_name() { [[ "$1" =~ ^[a-z0-9][a-z0-9._-]{0,62}$ ]]; }
name_error() {
	die "image name '$1': expected 1 to 63 of a-z 0-9 . _ - starting with a letter or digit"
}

# JSON string escaping for paths (names and packages are validated and need none).
json_str() {
	local s=$1
	s=${s//\\/\\\\}
	s=${s//\"/\\\"}
	printf '"%s"' "$s"
}

list_images() {
	local m dir
	[ -d "$cache" ] || return 0
	for m in "$cache"/*/manifest.json; do
		[ -f "$m" ] || continue
		dir=${m%/manifest.json}
		# The manifest is one line; add where the image is.
		sed "s|}\$|,\"path\":$(json_str "$dir/rootfs.ext4" | sed 's/[|&\\]/\\&/g')}|" "$m"
	done
}

remove_image() {
	local name=$1 gone
	valid_name "$name" || name_error "$name"
	[ -d "$cache/$name" ] || die "no image '$name' in $cache (forkd image ls lists them)"
	# Renamed away first, so nobody sees a half-removed image.
	gone=$(mktemp -d "$cache/.rm-$name.XXXXXX") || die "$cache: cannot write there"
	mv "$cache/$name" "$gone/" || die "cannot move $cache/$name away"
	rm -rf --one-file-system "$gone"
	rm -f "$cache/.$name.lock"
	echo "rootfs: removed $name" >&2
}

# Arguments.
name='' packages_arg='' packages_given=0
while [ $# -gt 0 ]; do
	case "$1" in
	--list)
		[ $# -eq 1 ] || die "--list takes no other arguments"
		list_images
		exit 0
		;;
	--rm)
		[ $# -eq 2 ] || die "--rm: expected exactly one image name"
		remove_image "$2"
		exit 0
		;;
	--packages)
		[ $# -ge 2 ] || die "--packages: expected a comma-separated package list after it"
		packages_arg=$2 packages_given=1
		shift 2
		;;
	--packages=*)
		packages_arg=${1#--packages=} packages_given=1
		shift
		;;
	-h | --help)
		usage
		exit 0
		;;
	-*) die "unknown option '$1' (expected --packages, --list, --rm or --help)" ;;
	*)
		[ -z "$name" ] || die "unexpected argument '$1' (one image name at a time)"
		name=$1
		shift
		;;
	esac
done
[ -n "$name" ] || die "expected an image name (usage: images/rootfs.sh NAME [--packages p1,p2,...])"
valid_name "$name" || name_error "$name"

# Packages: Debian's name syntax (policy 5.6.1), sorted and without duplicates
# so that the same set always gives the same hash.
packages=()
if [ "$packages_given" = 1 ]; then
	IFS=',' read -r -a raw <<<"$packages_arg"
	[ ${#raw[@]} -gt 0 ] || die "--packages '': expected a comma-separated package list such as python3,curl"
	for p in "${raw[@]}"; do
		[[ "$p" =~ ^[a-z0-9][a-z0-9+.-]+$ ]] ||
			die "--packages: '$p' is not a Debian package name (expected lowercase letters, digits, + - . and at least 2 characters)"
		packages+=("$p")
	done
	# No process substitution: it needs /dev/fd, which the nested test host lacks.
	# (The names are checked above: no spaces or glob characters to split on.)
	# shellcheck disable=SC2207
	packages=($(printf '%s\n' "${packages[@]}" | LC_ALL=C sort -u))
fi
pkg_csv=$(
	IFS=,
	echo "${packages[*]}"
)
[[ "$suite" =~ ^[a-z][a-z0-9-]*$ ]] || die "FORKD_DEBIAN_SUITE '$suite': expected a suite name such as bookworm"
[[ "$mirror" =~ ^(https?|file)://[^[:space:]\'\"]+$ ]] ||
	die "FORKD_DEBIAN_MIRROR '$mirror': expected an http://, https:// or file:// URL"
[ -f "$agent" ] || die "$agent missing: build it first with 'make build/guest/forkd-agent' (or point FORKD_BUILD at your build directory)"
[ -x "$agent" ] || die "$agent is not executable"

agent_sha=$(sha256sum "$agent" | cut -d' ' -f1)
script_sha=$(sha256sum "$script" | cut -d' ' -f1)
input_hash=$(printf 'suite=%s\nmirror=%s\npackages=%s\nagent=%s\nscript=%s\n' \
	"$suite" "$mirror" "$pkg_csv" "$agent_sha" "$script_sha" | sha256sum | cut -d' ' -f1)

# Up to date? (Reading only: this works on a read-only cache.)
dest=$cache/$name
if [ -s "$dest/rootfs.ext4" ] && [ -f "$dest/manifest.json" ] &&
	grep -q "\"input_hash\":\"$input_hash\"" "$dest/manifest.json"; then
	echo "rootfs: $name is up to date (hash ${input_hash:0:16}): $dest/rootfs.ext4" >&2
	exit 0
fi

[ "$(id -u)" = 0 ] || die "building an image needs root (debootstrap chroots and sets file owners)"
for tool in debootstrap mke2fs e2fsck sha256sum flock tar; do
	command -v "$tool" >/dev/null || die "'$tool' not found (scripts/install-deps.sh installs what is needed)"
done
{ mkdir -p "$cache" 2>/dev/null && [ -w "$cache" ]; } ||
	die "$cache: cannot write there (set FORKD_IMAGE_CACHE to a writable folder)"

start=$SECONDS
phase() { echo "rootfs: [$((SECONDS - start))s] $*" >&2; }

# One build per name at a time; the lock file stays (it is empty).
exec 9>"$cache/.$name.lock"
flock -n 9 || {
	phase "another build of $name is running; waiting for it"
	flock 9
}

# Everything is built in a temporary folder inside the cache (same file system,
# so publishing is a rename) and removed on any exit, Ctrl-C and kill included.
# debootstrap mounts /proc and /sys inside its target; a killed debootstrap
# leaves them, so unmount before removing, and never cross into a mount.
# Long steps run in their own process group (run_bg): bash runs a trap only
# after the foreground command ends, so a kill of this script would otherwise
# wait for all of debootstrap; this way it stops the whole group at once.
tmp='' child=''
run_bg() {
	setsid "$@" &
	child=$!
	local rc=0
	wait "$child" || rc=$?
	child=
	return "$rc"
}
cleanup() {
	if [ -n "$child" ]; then
		kill -TERM -- "-$child" 2>/dev/null || true
		wait "$child" 2>/dev/null || true
	fi
	[ -n "$tmp" ] && [ -d "$tmp" ] || return 0
	local m
	awk -v t="$tmp/" 'index($2, t) == 1 { print $2 }' /proc/self/mounts | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null || true; done
	rm -rf --one-file-system "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
tmp=$(mktemp -d "$cache/.build-$name.XXXXXX")
root=$tmp/root
out=$tmp/out
mkdir -p "$root" "$out"
log=$tmp/debootstrap.log
show_log() {
	echo "rootfs: last lines of the debootstrap log:" >&2
	tail -n 15 "$1" | sed 's/^/  | /' >&2
}

# The suite and package set key both tarball caches (the tree's also its format).
key=$(printf '%s\n%s\n' "$suite" "$pkg_csv" | sha256sum | cut -c1-16)
tree_key=$(printf '%s\n%s\n%s\n' "$suite" "$pkg_csv" "$TREE_FORMAT" | sha256sum | cut -c1-16)
debs=$cache/.debootstrap/$suite-$key.tgz
tree=$cache/.tree/$suite-$tree_key.tar
mkdir -p "$cache/.debootstrap" "$cache/.tree"
include=()
[ ${#packages[@]} -eq 0 ] || include=("--include=$pkg_csv")
if [ "${FORKD_ROOTFS_REFRESH:-0}" = 1 ]; then
	rm -f "$debs" "$tree"
fi

# The requested packages must be there; then drop what nothing in a sandbox
# reads (apt caches and lists, docs; copyright files stay: licences).
check_packages() {
	local p
	for p in "${packages[@]}"; do
		# shellcheck disable=SC2016 # dpkg-query's field, not the shell's
		chroot "$root" dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
			die "package '$p' is not installed in the image (not in $suite? the debootstrap log: $log)"
	done
}
check_and_trim() {
	check_packages
	rm -rf "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
		"$root"/var/cache/apt/archives/partial/* "$root"/var/lib/apt/lists/* \
		"$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/lintian \
		"$root"/var/cache/debconf/*-old "$root"/var/log/*.log "$root"/var/log/apt/* \
		"$root"/debootstrap
	find "$root/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete 2>/dev/null || true
	find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
	find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} + 2>/dev/null || true
}

if [ -s "$tree" ]; then
	phase "debootstrap: unpacking the installed $suite tree from the cache ($tree)"
	tar -C "$root" --numeric-owner --xattrs --xattrs-include='*' -xf "$tree" ||
		die "$tree: cannot unpack (corrupt? remove it and build again)"
	phase "packages: checking ${pkg_csv:-(none extra)} (the cached tree is already trimmed)"
	check_packages
else
	if [ ! -s "$debs" ]; then
		phase "debootstrap: downloading $suite minbase${pkg_csv:+ + $pkg_csv} from $mirror"
		dl=$tmp/download
		mkdir -p "$dl"
		run_bg debootstrap --variant=minbase "${include[@]}" --make-tarball="$tmp/debs.tgz" \
			"$suite" "$dl" "$mirror" >"$log" 2>&1 || {
			show_log "$log"
			die "debootstrap --make-tarball of $suite from $mirror failed${pkg_csv:+ (packages: $pkg_csv)}"
		}
		rm -rf --one-file-system "$dl"
		mv "$tmp/debs.tgz" "$debs"
	fi
	phase "debootstrap: installing $suite minbase${pkg_csv:+ + $pkg_csv} (from $debs)"
	run_bg debootstrap --variant=minbase "${include[@]}" --unpack-tarball="$debs" \
		"$suite" "$root" "$mirror" >"$log" 2>&1 || {
		show_log "$log"
		die "debootstrap of $suite into $root failed${pkg_csv:+ (packages: $pkg_csv)}"
	}
	phase "packages: checking ${pkg_csv:-(none extra)}; removing apt caches and docs"
	check_and_trim
	# Keep the installed, trimmed tree (before the changes below) so that a
	# new agent or script costs an unpack, not a debootstrap.
	tar -C "$root" --numeric-owner --xattrs --xattrs-include='*' --one-file-system \
		-cf "$tmp/tree.tar" . || die "cannot archive the installed tree into $tmp/tree.tar"
	mv "$tmp/tree.tar" "$tree"
fi

phase "system: hostname, machine-id, resolv.conf"
echo forkd >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tforkd\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
# Empty: no two sandboxes (or BRANCH children) should claim the same identity.
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
# debootstrap copied the build host's resolver set-up; a sandbox has no network by default.
rm -f "$root/etc/resolv.conf"
echo "# forkd sandboxes have no network by default; write a nameserver line here if yours has." \
	>"$root/etc/resolv.conf"
: >"$root/etc/fstab"

phase "agent: installing $agent as /usr/sbin/forkd-agent"
install -m 0755 "$agent" "$root/usr/sbin/forkd-agent"

# Size: the tree's blocks, one 256-byte inode per file, 5% and 8 MiB for
# ext4's own metadata. The guest mounts it read-only, so there is no need for
# room to grow (nor a journal, nor blocks reserved for root, nor room to resize:
# nothing ever writes it). Too small is caught by mke2fs and retried bigger.
files=$(find "$root" -xdev | wc -l)
used_kib=$(du -sk -x "$root" | cut -f1)
inodes=$((files + files / 5 + 1024))
size_kib=$(((used_kib + inodes / 4) * 105 / 100 + 8192))
image=$out/rootfs.ext4
for attempt in 1 2 3; do
	phase "mke2fs: $((size_kib / 1024)) MiB ext4 for $((used_kib / 1024)) MiB in $files files"
	rm -f "$image"
	if mke2fs -q -F -t ext4 -b 4096 -O ^has_journal,^resize_inode -m 0 -N "$inodes" -L forkd-root \
		-E root_owner=0:0 -d "$root" "$image" "${size_kib}k" >"$tmp/mke2fs.log" 2>&1; then
		break
	fi
	[ "$attempt" -lt 3 ] || die "mke2fs -d $root into $image failed: $(tr '\n' ' ' <"$tmp/mke2fs.log")"
	size_kib=$((size_kib * 5 / 4))
done
e2fsck -fn "$image" >"$tmp/e2fsck.log" 2>&1 ||
	die "$image: e2fsck found problems in the new image: $(tail -n 5 "$tmp/e2fsck.log" | tr '\n' ' ')"

size=$(stat -c %s "$image")
seconds=$((SECONDS - start))
pkg_json=$(printf '"%s",' "${packages[@]}")
[ ${#packages[@]} -eq 0 ] && pkg_json=
printf '{"name":"%s","packages":[%s],"suite":"%s","mirror":%s,"input_hash":"%s","agent_sha256":"%s","size":%s,"created":"%s","build_seconds":%s}\n' \
	"$name" "${pkg_json%,}" "$suite" "$(json_str "$mirror")" "$input_hash" "$agent_sha" \
	"$size" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$seconds" >"$out/manifest.json"

# Publish: the old image (if any) is renamed away, then the new one into place;
# a reader sees the old image, none for an instant, or the new one, never half of one.
sync "$image" "$out/manifest.json" 2>/dev/null || true
if [ -e "$dest" ]; then mv "$dest" "$tmp/old"; fi
mv "$out" "$dest"
phase "done: $dest/rootfs.ext4 ($((size / 1048576)) MiB, hash ${input_hash:0:16})"
