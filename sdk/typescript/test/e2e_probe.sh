#!/usr/bin/env bash
# The TypeScript SDK against a real `forkd serve` with probe guests: starts the
# daemon on a fresh state dir, runs build/sdk/typescript/test/e2e_daemon.js,
# stops the daemon, and fails if any forkd-vmm of that state dir is left.
# Needs /dev/kvm that runs the probe guest (natively here; elsewhere inside
# scripts/testhost.sh) and `make build/forkd build/forkd-vmm probe`.
#
#   sdk/typescript/test/e2e_probe.sh        # from the checkout
#
# Environment: FORKD_BUILD (default build), FORKD_CLI, FORKD_VMM, FORKD_PROBE.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$root"
build=${FORKD_BUILD:-build}
cli=${FORKD_CLI:-$build/forkd}
vmm=${FORKD_VMM:-$build/forkd-vmm}
probe=${FORKD_PROBE:-$build/guest/probe.elf}
fail() { echo "e2e_probe: FAIL: $*" >&2; echo "e2e_probe: 0 passed, 1 failed"; exit 1; }
for f in "$cli" "$vmm" "$probe"; do
	[ -f "$f" ] || fail "$f missing: make build/forkd build/forkd-vmm probe"
done
[ -c /dev/kvm ] || fail "no /dev/kvm: run it inside scripts/testhost.sh"
command -v tsc >/dev/null || fail "tsc not found: scripts/install-deps.sh installs node-typescript"
tsc -p sdk/typescript --outDir "$build/sdk/typescript" || fail "tsc failed"

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
		echo "e2e_probe: killing leftover VMMs: $left" >&2
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
FORKD_SOCKET="$dir/forkd.sock" FORKD_PROBE="$probe" node "$build/sdk/typescript/test/e2e_daemon.js" || rc=$?
kill -TERM "$daemon"
wait "$daemon" 2>/dev/null || true
daemon=
left=$(vmm_pids)
if [ -n "$left" ]; then
	echo "e2e_probe: FAIL: forkd-vmm processes of $dir left after the e2e: $left" >&2
	rc=1
fi
[ "$rc" -eq 0 ] || { echo "e2e_probe: serve.log tail:" >&2; tail -20 "$dir/serve.log" >&2; }
exit "$rc"
