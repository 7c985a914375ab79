#!/usr/bin/env bash
# The TypeScript SDK against a real `forkd serve`: starts the daemon on a fresh
# state dir, runs build/sdk/typescript/test/e2e_daemon.js, stops the daemon,
# and fails if any forkd-vmm of that state dir is left.
#
#   sdk/typescript/test/e2e_serve.sh                      # probe guests: native KVM(-PVM)
#   sdk/typescript/test/e2e_serve.sh --image forkd-test-base
#       # a Linux image's sandbox too (exec, files, branch): hardware KVM, or
#       # inside scripts/testhost.sh (wrapped in flock /tmp/forkd-nested.lock)
#
# Needs `make build/forkd build/forkd-vmm probe` (and `make images test-rootfs`
# for --image). Environment: FORKD_BUILD (default build), FORKD_CLI, FORKD_VMM,
# FORKD_PROBE; FORKD_E2E_IMAGE is the same as --image.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$root"
build=${FORKD_BUILD:-build}
cli=${FORKD_CLI:-$build/forkd}
vmm=${FORKD_VMM:-$build/forkd-vmm}
probe=${FORKD_PROBE:-$build/guest/probe.elf}
image=${FORKD_E2E_IMAGE:-}
case "${1:-}" in
--image) image=${2:?--image NAME}; shift 2 ;;
"") ;;
*) echo "usage: $0 [--image NAME]" >&2; exit 2 ;;
esac
fail() { echo "e2e_serve: FAIL: $*" >&2; echo "e2e_serve: 0 passed, 1 failed"; exit 1; }
for f in "$cli" "$vmm" "$probe"; do
	[ -f "$f" ] || fail "$f missing: make build/forkd build/forkd-vmm probe"
done
[ -c /dev/kvm ] || fail "no /dev/kvm: run it inside scripts/testhost.sh"
command -v tsc >/dev/null || fail "tsc not found: scripts/install-deps.sh installs node-typescript"
# Compiled here unless up to date (inside the nested test host tsc is slow).
js=$build/sdk/typescript/test/e2e_daemon.js
if [ ! -f "$js" ] || [ -n "$(find sdk/typescript -name '*.ts' -newer "$js" | head -1)" ]; then
	tsc -p sdk/typescript --outDir "$build/sdk/typescript" || fail "tsc failed"
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/forkd-tse2e.XXXXXX")
daemon=
# The VMMs of this state dir, found by their command lines (never by name).
vmm_pids() {
	local p
	for p in /proc/[0-9]*; do
		{ tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -q -- "forkd-vmm.*$dir/" && echo "${p#/proc/}"
	done
	return 0
}
cleanup() {
	local left
	if [ -n "$daemon" ]; then
		kill -TERM "$daemon" 2>/dev/null || true
		wait "$daemon" 2>/dev/null || true
	fi
	left=$(vmm_pids)
	if [ -n "$left" ]; then
		echo "e2e_serve: killing leftover VMMs: $left" >&2
		# shellcheck disable=SC2086
		kill -KILL $left 2>/dev/null || true
	fi
	rm -rf "$dir"
}
trap cleanup EXIT

"$cli" serve --state-dir "$dir/state" --socket "$dir/forkd.sock" --vmm "$vmm" >"$dir/serve.log" 2>&1 &
daemon=$!
for _ in $(seq 300); do
	FORKD_SOCKET="$dir/forkd.sock" "$cli" vm ls >/dev/null 2>&1 && break
	kill -0 "$daemon" 2>/dev/null || fail "forkd serve exited: $(tail -5 "$dir/serve.log")"
	sleep 0.1
done
FORKD_SOCKET="$dir/forkd.sock" "$cli" vm ls >/dev/null 2>&1 || fail "forkd serve did not answer within 30 s: $(tail -5 "$dir/serve.log")"

rc=0
FORKD_SOCKET="$dir/forkd.sock" FORKD_PROBE="$probe" FORKD_E2E_IMAGE="$image" node "$js" || rc=$?
kill -TERM "$daemon"
wait "$daemon" 2>/dev/null || true
daemon=
left=$(vmm_pids)
if [ -n "$left" ]; then
	echo "e2e_serve: FAIL: forkd-vmm processes of $dir left after the e2e: $left" >&2
	rc=1
fi
[ "$rc" -eq 0 ] || { echo "e2e_serve: serve.log tail:" >&2; tail -20 "$dir/serve.log" >&2; }
exit "$rc"
