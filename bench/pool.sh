#!/usr/bin/env bash
# Zygote pool benchmark: see bench/pool.py. JSON lines on stdout.
#   bench/pool.sh ["MEM_MIB ..."]      (SAMPLES=20 spawns per size, with and without the pool;
#                                       POOL_WORK="work=pattern pattern_mib=64": a guest that writes)
set -euo pipefail
cd "$(dirname "$0")/.."
make -s -j2 build/forkd-vmm probe >&2
exec python3 bench/pool.py "$@"
