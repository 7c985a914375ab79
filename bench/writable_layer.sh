#!/usr/bin/env bash
# The sandbox's writable layer at BRANCH time: 256 MiB written to a writable
# virtio-blk disk (which the fork engine copies after the pause, in the
# background with copy-before-write: disk_copy_us) against
# 256 MiB written to the root image's overlay upper layer, a tmpfs in guest RAM
# (shared copy-on-write by fork: nothing copied). One JSON line per BRANCH:
#   {"bench":"sandbox","op":"writable_layer","host":H,"layer":"disk-copied-after-pause"|"ram-upper",
#    "mib":256,"run":N,"pause_us":..,"capture_us":..,"disk_copy_us":..}
# Needs the image forkd-test-base (make test-rootfs). A Linux guest needs hardware
# virtualization; elsewhere this runs in the nested test host and says so in "host".
#
#   bench/writable_layer.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
# shellcheck source=scripts/kvm-kind.sh
. scripts/kvm-kind.sh
export FORKD_IMAGES=${FORKD_IMAGES:-$(default_images_dir)}
runs=${1:-3}
[[ "$runs" =~ ^[1-9][0-9]?$ ]] || { echo "bench/writable_layer.sh: RUNS '$runs': expected 1..99" >&2; exit 2; }

if [ -z "${FORKD_BENCH_INSIDE:-}" ]; then
	make -s -j2 build/forkd-vmm build/forkd images test-rootfs >/dev/null
	if [ "$(kvm_kind)" != hardware ]; then
		echo "bench/writable_layer.sh: no hardware virtualization here: running in the nested test host" >&2
		FORKD_BENCH_INSIDE=1 exec scripts/testhost.sh -- bench/writable_layer.sh "$runs"
	fi
fi
host=${FORKD_TESTHOST_KIND:-native}
work=$(mktemp -d "${TMPDIR:-/tmp}/forkd-bench-layer.XXXXXX")
vmm_pid=
cleanup() {
	if [ -n "$vmm_pid" ] && kill "$vmm_pid" 2>/dev/null; then wait "$vmm_pid" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

measure() { # LAYER EXTRA_VMM_ARGS FILL_COMMAND
	local d=$work/$1 k r
	mkdir -p "$d"
	# shellcheck disable=SC2086
	build/forkd-vmm --image forkd-test-base --mem 1G --cpus 2 --vsock "$d/v.sock" --control "$d/c.sock" \
		--serial "$d/console.log" --serial-in none $2 2>"$d/err" &
	vmm_pid=$!
	for _ in $(seq 1 300); do build/forkd agent "$d/v.sock" ping >/dev/null 2>&1 && break; sleep 0.5; done
	build/forkd exec "$d/v.sock" -- sh -c "$3"
	for k in $(seq 1 "$runs"); do
		r=$(build/forkd vm call --socket "$d/c.sock" --timeout 300000 "{\"cmd\":\"branch\",\"n\":1,\"dir\":\"$d/b$k\"}")
		echo "{\"bench\":\"sandbox\",\"op\":\"writable_layer\",\"host\":\"$host\",\"layer\":\"$1\",\"mib\":256,\"run\":$k,\"pause_us\":$(sed -n 's/.*"pause_us": *\([0-9]*\).*/\1/p' <<<"$r" | head -n1),\"capture_us\":$(sed -n 's/.*"capture_us": *\([0-9]*\).*/\1/p' <<<"$r" | head -n1),\"disk_copy_us\":$(sed -n 's/.*"disk_copy_us": *\([0-9]*\).*/\1/p' <<<"$r" | head -n1)}"
		build/forkd vm shutdown --socket "$d/b$k/child-0/control.sock" >/dev/null 2>&1 || true
		build/forkd vm call --socket "$d/c.sock" "{\"cmd\":\"zygote\",\"action\":\"release\",\"id\":$(sed -n 's/.*"zygote": *\([0-9]*\).*/\1/p' <<<"$r" | head -n1)}" >/dev/null
	done
	kill "$vmm_pid"
	wait "$vmm_pid" 2>/dev/null || true
	vmm_pid=
}

truncate -s 256M "$work/disk.img"
measure disk-copied-after-pause "--disk $work/disk.img" "dd if=/dev/urandom of=/dev/vdb bs=1M count=256 conv=fsync 2>/dev/null"
measure ram-upper "" "dd if=/dev/urandom of=/root/big bs=1M count=256 2>/dev/null && sync"
