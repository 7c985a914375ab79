#!/usr/bin/env bash
# The sandbox demo: a Linux VM from a root filesystem image with python3 and
# numpy boots once, a long-lived Python process in it imports numpy, and the
# VM is BRANCHed into 8 children. Each child runs a different computation
# against the numpy that is already imported, through `forkd exec`, and shows
# that its os.urandom differs from every other child's. Prints the time from
# the BRANCH request to the first answer in a child, and the cold path (boot
# plus import) it replaces, also as JSON rows (scripts/sandbox-lib.sh, shared
# with bench/sandbox.sh):
#   {"bench":"sandbox","op":"numpy_cold","host":H,"ms":N}
#   {"bench":"sandbox","op":"numpy_branch","host":H,"ms":N,"children":8,"rng_distinct":true}
# A Linux guest needs hardware virtualization; elsewhere this runs inside the
# nested test host (scripts/testhost.sh) and says so ("host":"nested","tcg":true):
# its timings measure an emulator, not forkd.
#
#   scripts/demo-sandbox.sh [CHILDREN]
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
# shellcheck source=scripts/kvm-kind.sh
. scripts/kvm-kind.sh
# shellcheck source=scripts/sandbox-lib.sh
. scripts/sandbox-lib.sh
# forkd-vmm --image takes vmlinux and initramfs.cpio from here.
export FORKD_IMAGES=${FORKD_IMAGES:-$(default_images_dir)}

kids=${1:-8}
case "$kids" in [1-9] | [1-9][0-9]) ;; *) echo "demo-sandbox: CHILDREN '$kids': expected 1..99" >&2; exit 2 ;; esac
if [ "${FORKD_DEMO_INSIDE:-0}" != 1 ]; then
	make -s -j2 build/forkd-vmm build/forkd build/guest/forkd-agent images
	echo "== root filesystem image '$sandbox_numpy_image': Debian bookworm + python3-numpy (cached after the first build)"
	sandbox_numpy_image_build
	if [ "$(kvm_kind)" != hardware ]; then
		echo "== no hardware virtualization here: running the demo inside the nested test host"
		echo "   (scripts/testhost.sh; everything below is emulated, so its times are not forkd's)"
		FORKD_DEMO_INSIDE=1 exec scripts/testhost.sh -- scripts/demo-sandbox.sh "$kids"
	fi
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/forkd-demo-sandbox.XXXXXX")
trap 'sandbox_stop; rm -rf "$work"' EXIT

sandbox_numpy_cold "$work"
sandbox_numpy_branch "$work" "$kids"
[ "$sandbox_rng_distinct" = true ] || { echo "demo-sandbox: children shared RNG output" >&2; exit 1; }
sandbox_numpy_rows "$kids"
