#!/usr/bin/env bash
# BRANCH benchmark: see bench/branch.py. JSON lines on stdout.
#   bench/branch.sh ["MEM_MIB ..."] ["2m 4k"]     (BRANCHES=20 branches per size)
# BRANCH_BACKENDS="anon hugetlb" adds rows on hugetlb guest RAM (the bench raises
# /proc/sys/vm/nr_hugepages for each such row and puts it back); BRANCH_PARTS
# ("branch qemu fanout uffd-wp-async uffd-wp") and BRANCH_QEMU_SIZES ("256 1024 4096") pick the
# parts. bench/plot.sh draws the stall rows (bench/branch-stall.png). "uffd-wp" adds live-snapshot
# rows, fork vs uffd-wp engine (bench/uffd_wp_snapshot.py).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v qemu-system-x86_64 >/dev/null; then
	apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends qemu-system-x86 >&2
fi
make -s -j2 build/forkd-vmm probe >&2
python3 bench/branch.py "$@"
# Live snapshots with engine uffd-wp-async beside the fork engine's, same run (bench/uffd_wp_async.py).
if [[ " ${BRANCH_PARTS:-branch qemu fanout uffd-wp-async uffd-wp} " == *" uffd-wp-async "* ]]; then
	bench/uffd_wp_async.sh "${BRANCH_ASYNC_SIZES:-256 1024 4096}"
fi
# ... and with engine uffd-wp (synchronous write protect), fork rows beside them (bench/uffd_wp_snapshot.py).
if [[ " ${BRANCH_PARTS:-branch qemu fanout uffd-wp-async uffd-wp} " == *" uffd-wp "* ]]; then
	python3 bench/uffd_wp_snapshot.py "${1:-256 1024 4096}" "${2:-2m 4k}"
fi
