#!/usr/bin/env bash
# Live snapshot, fork engine vs uffd-wp engine: see bench/uffd_wp_snapshot.py. JSON lines.
#   bench/uffd_wp_snapshot.sh ["MEM_MIB ..."] ["2m 4k"]     (UFFD_WP_RUNS=3 per engine)
set -euo pipefail
cd "$(dirname "$0")/.."
make -s -j2 build/forkd-vmm probe >&2
exec python3 bench/uffd_wp_snapshot.py "$@"
