#!/usr/bin/env bash
# The Linux sandbox, measured (bench/sandbox.c prints the rows): exec round
# trip, vsock bulk throughput, BRANCH to the first exec answered in a child.
# A Linux guest needs hardware virtualization: elsewhere this runs inside the
# nested test host (scripts/testhost.sh) and every row says
# "host":"nested-tcg" — timings of an emulated machine, never compared with
# native ones.
#
#   bench/sandbox.sh [--runs N] [--branches N] [--mib N]
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
# shellcheck source=scripts/kvm-kind.sh
. scripts/kvm-kind.sh
# Decided out here: inside the nested host /var/cache is read-only, which would
# send default_images_dir to the checkout's (possibly stale) .cache/images.
export FORKD_IMAGES=${FORKD_IMAGES:-$(default_images_dir)}

if [ -z "${FORKD_BENCH_INSIDE:-}" ]; then
	make -s -j2 build/forkd-vmm build/forkd build/bench/sandbox-bench images >/dev/null
	if [ "$(kvm_kind)" != hardware ]; then
		echo "bench/sandbox.sh: no hardware virtualization here: running in the nested test host" >&2
		exec scripts/testhost.sh -- env FORKD_BENCH_INSIDE=1 bench/sandbox.sh "$@"
	fi
fi
host=${FORKD_TESTHOST_KIND:-native}
images=$FORKD_IMAGES
tmp=$(mktemp -d "${TMPDIR:-/tmp}/forkd-bench-sandbox.XXXXXX")
vmm_pid=
cleanup() {
	# set -e reaches into this trap: the killed VMM's status (143) must not become ours.
	if [ -n "$vmm_pid" ] && kill "$vmm_pid" 2>/dev/null; then wait "$vmm_pid" 2>/dev/null || true; fi
	rm -rf "$tmp"
}
trap cleanup EXIT

build/forkd-vmm --kernel "$images/vmlinux" --initrd "$images/initramfs.cpio" --mem 1G --cpus 2 \
	--vsock "$tmp/vsock.sock" --control "$tmp/control.sock" --serial "$tmp/console.log" \
	--serial-in none --append "console=ttyS0 quiet forkd.agent=1" 2>"$tmp/vmm.err" &
vmm_pid=$!
for _ in $(seq 1 600); do
	build/forkd agent "$tmp/vsock.sock" ping >/dev/null 2>&1 && break
	kill -0 "$vmm_pid" 2>/dev/null || { echo "bench/sandbox.sh: the VM ended:" >&2; cat "$tmp/vmm.err" "$tmp/console.log" >&2; exit 1; }
	sleep 0.2
done
build/forkd agent "$tmp/vsock.sock" ping >/dev/null || {
	echo "bench/sandbox.sh: the agent never answered; the guest's console:" >&2
	tail -n 20 "$tmp/console.log" "$tmp/vmm.err" >&2
	exit 1
}
build/bench/sandbox-bench --vsock "$tmp/vsock.sock" --control "$tmp/control.sock" --host "$host" \
	--dir "$tmp" "$@"
