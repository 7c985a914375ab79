#!/usr/bin/env bash
# Draws bench/branch-stall.png: the in-guest stall of a BRANCH (fork engine, per
# host backing of guest RAM) and of QEMU's background snapshot against guest
# memory size, from the JSON rows bench/branch.sh prints, with the seed's
# figures for the public Firecracker-based system marked (its snapshot pause
# at 513 MiB: 163 ms to tmpfs, 4.26 s to disk).
#
#   bench/plot.sh [ROWS.jsonl ...] [-o OUT.png]
#
# Default input bench/branch-stall.jsonl (the rows behind the committed png),
# default output bench/branch-stall.png. Rows used: {"bench":"branch",
# "engine":"fork","guest_pages":"2m","mem_backend":B,...,"guest_stall_us_p50"}
# and {"bench":"branch","engine":"qemu-bg",...}; rows with "error" are left out.
# Needs gnuplot (Debian's gnuplot-nox, installed here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

out=bench/branch-stall.png
inputs=()
while [ $# -gt 0 ]; do
	case $1 in
	-o)
		[ $# -ge 2 ] || { echo "bench/plot.sh: -o needs a file name" >&2; exit 2; }
		out=$2
		shift 2
		;;
	*)
		inputs+=("$1")
		shift
		;;
	esac
done
[ ${#inputs[@]} -gt 0 ] || inputs=(bench/branch-stall.jsonl)
for f in "${inputs[@]}"; do
	[ -r "$f" ] || { echo "bench/plot.sh: cannot read rows file '$f'" >&2; exit 2; }
done
if ! command -v gnuplot >/dev/null; then
	apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends gnuplot-nox >&2
fi

data=$(mktemp -d /tmp/forkd-plot.XXXXXX)
trap '[ -n "${PLOT_KEEP:-}" ] || rm -rf "$data"' EXIT

# One data file per series: "MEM_MIB STALL_MS" sorted by size; a missing series stays empty.
python3 - "$data" "${inputs[@]}" <<'PY'
import json, os, sys
out, files = sys.argv[1], sys.argv[2:]
series = {"anon": {}, "hugetlb": {}, "qemu": {}}
for path in files:
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                r = json.loads(line)
            except ValueError as e:
                sys.exit(f"bench/plot.sh: {path}:{n}: not a JSON row: {e}")
            if r.get("bench") != "branch" or "error" in r or r.get("guest_stall_us_p50") is None:
                continue
            if r.get("guest_pages", "2m") != "2m":
                continue
            if r.get("engine") == "fork":
                key = r.get("mem_backend", "anon")
            elif r.get("engine") == "qemu-bg":
                key = "qemu"
            else:
                continue
            if key in series:  # the last row of a size wins
                series[key][int(r["mem_mib"])] = r["guest_stall_us_p50"] / 1000.0
if not any(series.values()):
    sys.exit("bench/plot.sh: no usable branch rows (guest_stall_us_p50, 2m guest pages) in "
             + " ".join(files))
for key, points in series.items():
    with open(os.path.join(out, key + ".dat"), "w") as f:
        for mib in sorted(points):
            f.write(f"{mib} {points[mib]:.3f}\n")
PY

plot_series=()
add() { # FILE TITLE STYLE
	if [ -s "$data/$1.dat" ]; then
		plot_series+=("'$data/$1.dat' using 1:2 with linespoints $3 title '$2'")
	fi
}
add hugetlb "forkd BRANCH, hugetlb guest RAM (--mem-backend hugetlb)" "lw 2 pt 7 ps 1.2 lc rgb '#1b7837'"
add anon "forkd BRANCH, anonymous RAM + THP re-collapse (default)" "lw 2 pt 5 ps 1.2 lc rgb '#2166ac'"
add qemu "QEMU 7.2 background-snapshot" "lw 2 pt 9 ps 1.4 lc rgb '#b2182b'"
plot_series+=("'-' using 1:2 with points pt 3 ps 2.2 lw 2 lc rgb '#762a83' title 'seed: Firecracker-based system, snapshot pause (513 MiB)'")
joined=$(printf '%s, ' "${plot_series[@]}")
joined=${joined%, }

gnuplot <<GP
set terminal pngcairo size 1000,600 font "DejaVu Sans,11"
set output "$out"
set title "Guest-visible stall of one branch/snapshot vs guest memory\\n(p50; native KVM-PVM, probe guest under a write load; a shared, loaded 2-core machine: stalls include host scheduling)" font ",10"
set xlabel "guest memory written (MiB)"
set ylabel "longest in-guest stall (ms, log)"
set logscale xy
set xrange [150:30000]
set yrange [0.1:10000]
set xtics ("256" 256, "1 GiB" 1024, "4 GiB" 4096, "8 GiB" 8192, "16 GiB" 16384)
set grid
set key bottom right box opaque
set label 1 "163 ms (tmpfs)" at 560,163 left
set label 2 "4.26 s (disk)" at 560,4260 left
plot $joined
513 163
513 4260
e
GP
echo "bench/plot.sh: wrote $out" >&2
