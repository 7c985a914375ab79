#!/usr/bin/env bash
# vsock bulk throughput with the probe guest: forkd-vmm boots guest/probe with
# its `vsock` echo workload (guest/probe/vsock.c), and a host client pushes
# MIB MiB through each of N connections (CONNECT over the VM's Unix socket,
# docs/vsock.md) while reading the echo back. mib_s counts bytes echoed per
# second (each byte crosses the device twice). One row for 1 connection, one
# for 32:
#   {"bench":"sandbox","op":"vsock_bulk","host":"native-pvm","guest":"probe",
#    "mib_s":..,"connections":N,"mib_per_connection":M}
# Native /dev/kvm only (KVM-PVM or hardware): the probe needs no nested host,
# and numbers from an emulated one would not be comparable.
#
#   bench/vsock.sh [MIB_PER_CONNECTION]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/kvm-kind.sh
. scripts/kvm-kind.sh

mib=${1:-64}
kind=$(kvm_kind)
if [ "$kind" = none ]; then
	echo "bench/vsock.sh: no usable /dev/kvm here (this bench runs natively only)" >&2
	exit 1
fi
command -v python3 >/dev/null || { echo "bench/vsock.sh: needs python3 (the host client)" >&2; exit 1; }
make -s -j2 build/forkd-vmm probe >&2

tmp=$(mktemp -d "${TMPDIR:-/tmp}/forkd-bench-vsock.XXXXXX")
vmm_pid=
cleanup() {
	if [ -n "$vmm_pid" ] && kill "$vmm_pid" 2>/dev/null; then wait "$vmm_pid" 2>/dev/null || true; fi
	rm -rf "$tmp"
}
trap cleanup EXIT

build/forkd-vmm --kernel build/guest/probe.elf --mem 256M --cpus 2 --vsock "$tmp/v.sock" \
	--append "work=vsock,idle vsock_port=1024" --serial-in none >"$tmp/console" 2>"$tmp/err" &
vmm_pid=$!
for _ in $(seq 1 200); do
	grep -q '^vsock.ready' "$tmp/console" && break
	sleep 0.05
done
grep -q '^vsock.ready' "$tmp/console" || {
	echo "bench/vsock.sh: the probe never reported vsock.ready" >&2
	cat "$tmp/console" "$tmp/err" >&2
	exit 1
}

for conns in 1 32; do
	python3 - "$tmp/v.sock" "$conns" "$mib" "native-$kind" <<'EOF'
import json, os, selectors, socket, sys, time

path, n, mib, host = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
total = mib << 20
chunk = os.urandom(256 << 10)
conns = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(b"CONNECT 1024\n")
    line = b""
    while not line.endswith(b"\n"):
        b = s.recv(1)
        if not b:
            sys.exit("bench/vsock.sh: the guest refused the connection")
        line += b
    s.setblocking(False)
    conns.append({"s": s, "wr": 0, "rd": 0})
sel = selectors.DefaultSelector()
for c in conns:
    sel.register(c["s"], selectors.EVENT_READ | selectors.EVENT_WRITE, c)
start = time.monotonic()
left = n
while left:
    for key, ev in sel.select(timeout=10):
        c = key.data
        if ev & selectors.EVENT_WRITE and c["wr"] < total:
            try:
                c["wr"] += c["s"].send(memoryview(chunk)[: min(len(chunk), total - c["wr"])])
            except BlockingIOError:
                pass
            if c["wr"] == total:
                sel.modify(c["s"], selectors.EVENT_READ, c)
        if ev & selectors.EVENT_READ:
            try:
                b = c["s"].recv(1 << 20)
            except BlockingIOError:
                continue
            if not b:
                sys.exit("bench/vsock.sh: a connection closed early")
            c["rd"] += len(b)
            if c["rd"] == total:
                sel.unregister(c["s"])
                left -= 1
secs = time.monotonic() - start
for c in conns:
    c["s"].close()
print(json.dumps({"bench": "sandbox", "op": "vsock_bulk", "host": host, "guest": "probe",
                  "mib_s": round(n * mib / secs, 1), "connections": n,
                  "mib_per_connection": mib}, separators=(",", ":")))
EOF
done
