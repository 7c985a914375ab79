#!/usr/bin/env bash
# The Linux sandbox, measured. JSON lines on stdout (progress on stderr):
#   exec_rtt        exec round trip (p50_ms, p99_ms)                 bench/sandbox.c
#   vsock_bulk      a command's stdout through agent and vsock (mib_s)  bench/sandbox.c
#   branch_to_exec  BRANCH request to the first exec answered in each child,
#                   p50 over BRANCHES x PER_BRANCH children (default 5 x 4 = 20),
#                   rng_distinct                                     bench/sandbox.c
#   numpy_cold      VM start to a warm Python process with numpy imported (ms)
#   numpy_branch    BRANCH of that VM to a child's first answer (ms)  scripts/sandbox-lib.sh
# The first three run on Debian's kernel and our initramfs (1 GiB, 2 vCPUs);
# the numpy rows on the forkd-demo-numpy image, as scripts/demo-sandbox.sh does.
# A Linux guest needs hardware virtualization: elsewhere this runs inside the
# nested test host (scripts/testhost.sh) and every row says
# "host":"nested","tcg":true — timings of an emulated machine, never compared
# with native ones ("host":"native").
#
#   bench/sandbox.sh [--runs N] [--branches N] [--per-branch N] [--mib N] [--numpy-children N]
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
# shellcheck source=scripts/kvm-kind.sh
. scripts/kvm-kind.sh
# shellcheck source=scripts/sandbox-lib.sh
. scripts/sandbox-lib.sh
sandbox_say_fd=2
# Decided out here: inside the nested host /var/cache is read-only, which would
# send default_images_dir to the checkout's (possibly stale) .cache/images.
export FORKD_IMAGES=${FORKD_IMAGES:-$(default_images_dir)}

bench_args=()
numpy_kids=8
while [ $# -gt 0 ]; do
	case "$1" in
	--runs | --branches | --per-branch | --mib) bench_args+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
	--numpy-children) numpy_kids=${2:?--numpy-children needs a value}; shift 2 ;;
	*) echo "bench/sandbox.sh: unknown option '$1' (expected --runs, --branches, --per-branch, --mib, --numpy-children)" >&2; exit 2 ;;
	esac
done
case "$numpy_kids" in [1-9] | [1-9][0-9]) ;; *) echo "bench/sandbox.sh: --numpy-children '$numpy_kids': expected 1..99" >&2; exit 2 ;; esac

if [ -z "${FORKD_BENCH_INSIDE:-}" ]; then
	make -s -j2 build/forkd-vmm build/forkd build/guest/forkd-agent build/bench/sandbox-bench images >/dev/null
	sandbox_numpy_image_build >&2
	if [ "$(kvm_kind)" != hardware ]; then
		echo "bench/sandbox.sh: no hardware virtualization here: running in the nested test host" >&2
		exec scripts/testhost.sh -- env FORKD_BENCH_INSIDE=1 bench/sandbox.sh "${bench_args[@]}" \
			--numpy-children "$numpy_kids"
	fi
fi
images=$FORKD_IMAGES
tmp=$(mktemp -d "${TMPDIR:-/tmp}/forkd-bench-sandbox.XXXXXX")
trap 'sandbox_stop; rm -rf "$tmp"' EXIT

sandbox_boot "$tmp/agent" --kernel "$images/vmlinux" --initrd "$images/initramfs.cpio" --mem 1G \
	--cpus 2 --append "console=ttyS0 quiet forkd.agent=1"
build/bench/sandbox-bench --vsock "$tmp/agent/vsock.sock" --control "$tmp/agent/control.sock" \
	--host "${FORKD_TESTHOST_KIND:-native}" --dir "$tmp/agent" "${bench_args[@]}"
sandbox_stop

sandbox_numpy_cold "$tmp/numpy"
sandbox_numpy_branch "$tmp/numpy" "$numpy_kids"
sandbox_numpy_rows "$numpy_kids"
