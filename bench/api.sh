#!/usr/bin/env bash
# The REST API's overhead over the raw control socket: see bench/api.py.
# JSON lines on stdout (progress on stderr):
#   branch      POST /v1/vms/{id}/branch {"n":1} vs {"cmd":"branch"} on the VM's control
#               socket, the zygote released after the timing on both (probe guest, native)
#   spawn       POST /v1/snapshots/{tag}/spawn {"n":1} vs forkd-vmm --restore started
#               directly (posix_spawn) until its control socket answers status, told by
#               --ready-fd or polled every 1 ms, the faster at p50 (probe guest, native)
#   concurrent  N requests at once (GET /v1/vms/{id}, GET /v1/tree, a few branches)
#   exec        POST /v1/vms/{id}/exec {"argv":["true"]} vs the agent protocol over the
#               VM's vsock socket from Python (image forkd-test-base, `make test-rootfs`)
# A Linux guest needs hardware virtualization: elsewhere the exec part runs inside
# the nested test host (scripts/testhost.sh) and its row says "host":"nested","tcg":true
# (timings of an emulated machine, never compared with native ones).
#
#   bench/api.sh [--samples N] [--exec-samples N] [--concurrent N] [--native-only|--exec-only]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/kvm-kind.sh
. scripts/kvm-kind.sh

samples=30
exec_samples=50
concurrent=200
parts=both
while [ $# -gt 0 ]; do
	case "$1" in
	--samples) samples=${2:?--samples needs a value}; shift 2 ;;
	--exec-samples) exec_samples=${2:?--exec-samples needs a value}; shift 2 ;;
	--concurrent) concurrent=${2:?--concurrent needs a value}; shift 2 ;;
	--native-only) parts="native"; shift ;;
	--exec-only) parts="exec"; shift ;;
	*) echo "bench/api.sh: unknown option '$1' (expected --samples, --exec-samples, --concurrent, --native-only, --exec-only)" >&2; exit 2 ;;
	esac
done

if [ -z "${FORKD_BENCH_INSIDE:-}" ]; then
	make -s -j2 build/forkd-vmm build/forkd probe >&2
	if [ "$parts" != native ]; then
		make -s -j2 build/guest/forkd-agent images test-rootfs >&2
	fi
	kind=$(kvm_kind)
	if [ "$parts" != exec ]; then
		if [ "$kind" = none ]; then
			echo "bench/api.sh: no usable /dev/kvm: the native part is skipped" >&2
		else
			python3 bench/api.py native --samples "$samples" --concurrent "$concurrent"
		fi
	fi
	[ "$parts" = native ] && exit 0
	if [ "$kind" != hardware ]; then
		echo "bench/api.sh: no hardware virtualization here: exec runs in the nested test host" >&2
		exec scripts/testhost.sh -- env FORKD_BENCH_INSIDE=1 bench/api.sh --exec-only \
			--exec-samples "$exec_samples"
	fi
fi
exec python3 bench/api.py exec --samples "$exec_samples"
