#!/bin/bash
# bench/jail.sh: forkd serve's create/branch/spawn latency, jailed vs --no-jail, probe guest, native
# Rows: {"bench":"api","op":"jail_overhead","jail":B,"create_us_p50":..,"branch_us_p50":..,"snapshot_us":..,"spawn10_us":..}
# (CLI round trips, 15 creates and branches each; one snapshot; one spawn of 10). Native only:
# the rows say "kvm":"native-<kind>"; "loaded":true when other work shared the machine (LOADED=true).
set -e
cd "$(dirname "$0")/.."
make -s -j2 build/forkd build/forkd-vmm probe
# shellcheck source=scripts/kvm-kind.sh
. scripts/kvm-kind.sh
kind=$(kvm_kind)
if [ "$kind" = none ]; then
  echo '{"bench":"api","op":"jail_overhead","error":"no usable /dev/kvm: timings are taken on native KVM only"}'
  exit 1
fi
for mode in jail nojail; do
  d=$(mktemp -d /tmp/jb.XXXXXX)
  extra=""; [ $mode = nojail ] && extra="--no-jail"
  build/forkd serve --state-dir $d/s --socket $d/f.sock $extra >/dev/null 2>$d/log &
  sp=$!
  export FORKD_SOCKET=$d/f.sock
  for i in $(seq 1 50); do build/forkd vm ls >/dev/null 2>&1 && break; sleep 0.1; done
  c=(); b=()
  for i in $(seq 1 15); do
    t0=$(date +%s%N); id=$(build/forkd vm create --kernel build/guest/probe.elf --mem 64 --append work=idle 2>/dev/null); t1=$(date +%s%N)
    c+=($(( (t1-t0)/1000 )))
    t0=$(date +%s%N); build/forkd branch $id -n 1 >/dev/null 2>&1; t1=$(date +%s%N)
    b+=($(( (t1-t0)/1000 )))
  done
  t0=$(date +%s%N); build/forkd snapshot $id --tag t >/dev/null 2>&1; t1=$(date +%s%N); snap=$(( (t1-t0)/1000 ))
  t0=$(date +%s%N); build/forkd spawn t -n 10 >/dev/null 2>&1; t1=$(date +%s%N); sp10=$(( (t1-t0)/1000 ))
  med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
  echo "{\"bench\":\"api\",\"op\":\"jail_overhead\",\"jail\":$([ $mode = jail ] && echo true || echo false),\"create_us_p50\":$(med "${c[@]}"),\"branch_us_p50\":$(med "${b[@]}"),\"snapshot_us\":$snap,\"spawn10_us\":$sp10,\"kvm\":\"native-$kind\",\"loaded\":${LOADED:-false}}"
  for v in $(build/forkd vm ls --json | python3 -c 'import json,sys; [print(v["id"]) for v in json.load(sys.stdin)["vms"] if not v["parent"] and not v["snapshot"]]'); do build/forkd vm rm --cascade $v >/dev/null 2>&1 || true; done
  build/forkd snapshots rm t --cascade >/dev/null 2>&1 || true
  kill $sp; wait $sp 2>/dev/null || true
  rm -rf $d
done
