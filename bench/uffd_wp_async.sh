#!/usr/bin/env bash
# Live snapshots, engine uffd-wp-async beside the fork engine (bench/uffd_wp_async.py).
#   bench/uffd_wp_async.sh ["MEM_MIB ..."] ["4k 2m"]     (ASYNC_RUNS=3 per engine and size)
# JSON lines on stdout; bench/branch.sh runs it too (BRANCH_PARTS with "uffd-wp-async").
set -euo pipefail
cd "$(dirname "$0")/.."
make -s -j2 build/forkd-vmm probe >&2
exec python3 bench/uffd_wp_async.py "$@"
