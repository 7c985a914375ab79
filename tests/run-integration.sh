#!/usr/bin/env bash
# Runs integration-test binaries, each where it can really run (docs/testing.md):
#   needs=kvm    (probe guests)  natively where /dev/kvm exists (PVM or hardware),
#                                else in the nested test host;
#   needs=linux  (Linux guests)  natively only with hardware virtualization,
#                                else in the nested test host;
#   needs=testhost (regressions of nested-host faults)  always in the nested host;
#   needs=cgroup2 (probe guests and cgroup v2 limits)  natively where /dev/kvm exists
#                                and /sys/fs/cgroup is cgroup v2 with the memory, cpu
#                                and pids controllers, else in the nested test host;
#   needs=nothing                natively.
# FORKD_TESTHOST=always sends every KVM test to the nested host; =never runs
# everything natively (a test that cannot run there then fails with its reason).
# Every binary must run all the tests it defines: the closing line counts them,
# and a binary that ran fewer than it defines (crashed, or its set-up failed)
# counts its missing tests as failed.
#
#   tests/run-integration.sh BIN...    (the Makefile sets FORKD_VMM and friends)
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/kvm-kind.sh
. "$repo/scripts/kvm-kind.sh"

mode=${FORKD_TESTHOST:-auto}
case "$mode" in auto | always | never) ;; *)
	echo "run-integration: FORKD_TESTHOST='$mode': expected auto, always or never" >&2
	exit 2
	;;
esac
kind=$(kvm_kind)
echo "run-integration: this machine's KVM: $kind; FORKD_TESTHOST=$mode"

total_defined=0 total_passed=0 total_failed=0 freezes=0 panics=0
failed_bins=()
log=$(mktemp "${TMPDIR:-/tmp}/forkd-itest.XXXXXX")
trap 'rm -f "$log"' EXIT

for bin in "$@"; do
	name=${bin##*/}
	info=$("$bin" --needs) || { echo "run-integration: $bin --needs failed" >&2; exit 2; }
	needs=$(sed -n 's/.*needs=\([a-z0-9]*\).*/\1/p' <<<"$info")
	defined=$(sed -n 's/.*tests=\([0-9]*\).*/\1/p' <<<"$info")
	# A binary may ask for a bigger nested host (where.h: where_set_nested_mem_mib).
	mem_mib=$(sed -n 's/.*nested_mem_mib=\([0-9]*\).*/\1/p' <<<"$info")
	testhost_args=()
	[ -n "$mem_mib" ] && testhost_args=(--mem "${mem_mib}M")
	nested=0
	case "$needs" in
	nothing) ;;
	kvm) [ "$mode" = always ] || { [ "$mode" = auto ] && [ "$kind" = none ]; } && nested=1 ;;
	linux) [ "$mode" = always ] || { [ "$mode" = auto ] && [ "$kind" != hardware ]; } && nested=1 ;;
	testhost) nested=1 ;;
	cgroup2)
		ctl=$(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null)
		[ "$mode" = always ] || { [ "$mode" = auto ] && { [ "$kind" = none ] ||
			[ "$(stat -f -c %T /sys/fs/cgroup)" != cgroup2fs ] ||
			! grep -qw memory <<<"$ctl" || ! grep -qw cpu <<<"$ctl" ||
			! grep -qw pids <<<"$ctl"; }; } && nested=1
		;;
	*) echo "run-integration: $bin: unknown needs '$needs'" >&2; exit 2 ;;
	esac
	[ "$mode" = never ] && [ "$needs" != testhost ] && nested=0
	start=$(date +%s)
	if [ "$nested" = 1 ]; then
		echo "== $name ($defined tests, needs $needs: in the nested test host)"
		"$repo/scripts/testhost.sh" "${testhost_args[@]}" -- "$bin" 2>&1 | tee "$log"
		status=${PIPESTATUS[0]}
		# The nested host's own kernel sometimes locks up under QEMU's TCG
		# (docs/testing.md): that is no verdict on the tests, so run them
		# again in a fresh nested host, at most twice, and say so.
		for attempt in 2 3; do
			[ "$status" = 125 ] && grep -q '^testhost: error: the nested host froze' "$log" || break
			echo "run-integration: $name: the nested host froze (not a test result); attempt $attempt of 3 in a fresh one"
			freezes=$((freezes + 1))
			"$repo/scripts/testhost.sh" "${testhost_args[@]}" -- "$bin" 2>&1 | tee "$log"
			status=${PIPESTATUS[0]}
		done
		# A Linux guest's kernel (L2) that panicked inside the nested host, on
		# a fault in its own CPU entry code (docs/testing.md: seen once under
		# TCG's SVM emulation): run the binary once more in a fresh nested
		# host, and say so; a second panic is a failure like any other.
		if [ "$status" != 0 ] && [ "$status" != 125 ] &&
			grep -q '^| \[ *[0-9.]*\] Kernel panic - not syncing' "$log"; then
			echo "run-integration: $name: a Linux guest's kernel panicked in the nested host (see above); attempt 2 of 2 in a fresh one"
			panics=$((panics + 1))
			"$repo/scripts/testhost.sh" "${testhost_args[@]}" -- "$bin" 2>&1 | tee "$log"
			status=${PIPESTATUS[0]}
		fi
	else
		echo "== $name ($defined tests, needs $needs: natively)"
		"$bin" 2>&1 | tee "$log"
		status=${PIPESTATUS[0]}
	fi
	passed=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test(s)\..*/\1/p' "$log" | tail -n1)
	passed=${passed:-0}
	failed=$((defined - passed))
	if [ "$status" -ne 0 ] || [ "$failed" -ne 0 ]; then
		[ "$failed" -gt 0 ] || failed=1
		failed_bins+=("$name")
	fi
	echo "-- $name: $passed of $defined passed, exit status $status, $(($(date +%s) - start)) s"
	total_defined=$((total_defined + defined))
	total_passed=$((total_passed + passed))
	total_failed=$((total_failed + failed))
done

echo "run-integration: $total_passed of $total_defined integration tests passed${failed_bins[*]:+; failed: ${failed_bins[*]}}"
[ "$freezes" = 0 ] || echo "run-integration: the nested host froze $freezes time(s); each time the binary ran again in a fresh one"
[ "$panics" = 0 ] || echo "run-integration: a Linux guest's kernel panicked in the nested host $panics time(s); each time the binary ran again in a fresh one"
echo "integration: $total_passed passed, $total_failed failed"
[ "${#failed_bins[@]}" -eq 0 ]
