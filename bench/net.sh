#!/usr/bin/env bash
# virtio-net throughput with the probe guest (docs/net-device.md): forkd-vmm
# boots guest/probe with its `net` workload (guest/probe/net.c) on a tap in a
# network namespace this script creates (and removes); the host end is an
# AF_PACKET socket on the tap, in Python. Rows (JSON lines), for 64- and
# 1514-byte frames:
#   op=tx    the guest sends N frames as fast as its 128 tx slots allow
#            (`net send`); frames_s/mib_s are what the host received per second.
#   op=rx    the host writes frames for SECONDS as fast as it can; frames_s is
#            what the guest counted per second, sent_s what the host wrote, and
#            drop_pct the share the kernel's tap queue dropped (the device reads
#            only what the guest has buffers for: docs/net-device.md).
#   op=echo  the host keeps WINDOW frames in flight to the guest, which echoes
#            each; frames_s counts round trips (each frame crosses both ways).
# Native /dev/kvm only (KVM-PVM or hardware): numbers from the nested host
# would not be comparable. Needs root (namespaces, taps) and python3.
#
#   bench/net.sh [FRAMES [SECONDS]]
#
# With --linux: a Linux guest's TCP through --net-policy host (throughput, round
# trip) and the cost of BRANCH with networking on and off (bench/net_linux.py).
# It needs hardware virtualization; elsewhere it runs inside the nested test
# host and its rows say "host":"nested","tcg":true (never compared with native).
#
#   bench/net.sh --linux [--runs N] [--branches N] [--mib N]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/kvm-kind.sh
. scripts/kvm-kind.sh

if [ "${1:-}" = --linux ]; then
	shift
	# Decided out here: inside the nested host /var/cache is read-only.
	export FORKD_IMAGES=${FORKD_IMAGES:-$(default_images_dir)}
	if [ -z "${FORKD_BENCH_INSIDE:-}" ]; then
		make -s -j2 build/forkd-vmm build/forkd build/guest/forkd-agent images >&2
		if [ "$(kvm_kind)" != hardware ]; then
			echo "bench/net.sh: no hardware virtualization here: running in the nested test host" >&2
			exec scripts/testhost.sh -- env FORKD_BENCH_INSIDE=1 bench/net.sh --linux "$@"
		fi
	fi
	exec python3 bench/net_linux.py --vmm build/forkd-vmm --forkd build/forkd --images "$FORKD_IMAGES" "$@"
fi

frames=${1:-200000}
seconds=${2:-3}
kind=$(kvm_kind)
if [ "$kind" = none ]; then
	echo "bench/net.sh: no usable /dev/kvm here (this bench runs natively only)" >&2
	exit 1
fi
command -v python3 >/dev/null || { echo "bench/net.sh: needs python3 (the host side)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "bench/net.sh: needs root (network namespace and tap)" >&2; exit 1; }
make -s -j2 build/forkd-vmm probe >&2

ns=fknb$$
tmp=$(mktemp -d "${TMPDIR:-/tmp}/forkd-bench-net.XXXXXX")
vmm_pid=
cleanup() {
	if [ -n "$vmm_pid" ] && kill "$vmm_pid" 2>/dev/null; then wait "$vmm_pid" 2>/dev/null || true; fi
	ip netns del "$ns" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

ip netns add "$ns"
ip -n "$ns" tuntap add dev fkb0 mode tap
ip netns exec "$ns" sysctl -qw net.ipv6.conf.fkb0.disable_ipv6=1
ip -n "$ns" link set fkb0 up
mkfifo "$tmp/in"
exec 3<>"$tmp/in"
build/forkd-vmm --kernel build/guest/probe.elf --mem 128M --cpus 1 \
	--net "tap=fkb0,netns=$ns" --append "work=net net_tx=0" \
	--serial-in "$tmp/in" >"$tmp/console" 2>"$tmp/err" &
vmm_pid=$!
for _ in $(seq 1 200); do
	grep -q '^net.ready' "$tmp/console" && break
	sleep 0.05
done
grep -q '^net.ready' "$tmp/console" || {
	echo "bench/net.sh: the probe never reported net.ready" >&2
	cat "$tmp/console" "$tmp/err" >&2
	exit 1
}
mac=$(sed -n 's/^net.ready mac=\([0-9a-f:]*\) .*/\1/p' "$tmp/console")

# The guest's `net status` value of KEY (asked with a fresh tag).
guest_status() {
	local tag=t$RANDOM$RANDOM line
	echo "net status $tag" >&3
	for _ in $(seq 1 100); do
		line=$(grep "^net.status tag=$tag " "$tmp/console" || true)
		[ -n "$line" ] && break
		sleep 0.05
	done
	sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$line"
}

for len in 64 1514; do
	# tx: the guest sends, the host counts.
	python3 - "$ns" "$frames" "$len" "native-$kind" "$tmp" <<'EOF' &
import ctypes, json, os, select, socket, sys, time
ns, n, length, host, tmp = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open("/run/netns/" + ns, os.O_RDONLY)
libc.setns(fd, 0x40000000)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))
s.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)  # SO_RCVBUFFORCE
s.bind(("fkb0", 0x88b5))
open(tmp + "/tx-ready", "w").close()
got = 0; first = last = None
while got < n:
    r, _, _ = select.select([s], [], [], 2.0)
    if not r:
        break
    s.recv(2048)
    last = time.monotonic()
    first = first or last
    got += 1
dt = (last - first) if got > 1 else float("nan")
print(json.dumps({"bench": "net", "op": "tx", "host": host, "guest": "probe",
                  "frame_bytes": length, "sent": n, "frames": got,
                  "frames_s": round((got - 1) / dt), "mib_s": round((got - 1) * length / dt / 2**20, 1)}))
EOF
	py=$!
	for _ in $(seq 1 100); do [ -e "$tmp/tx-ready" ] && break; sleep 0.05; done
	rm -f "$tmp/tx-ready"
	echo "net send $frames $len" >&3
	wait "$py"

	# rx: the host floods, the guest counts.
	before=$(guest_status net.counted)
	sent=$(python3 - "$ns" "$seconds" "$len" "$mac" <<'EOF'
import ctypes, os, socket, sys, time
ns, secs, length, mac = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open("/run/netns/" + ns, os.O_RDONLY)
libc.setns(fd, 0x40000000)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))
s.bind(("fkb0", 0x88b5))
f = bytes.fromhex(mac.replace(":", "")) + bytes.fromhex("020000000099") + b"\x88\xb5" + b"forkd-count"
f += bytes(length - len(f))
sent = 0
end = time.monotonic() + secs
while time.monotonic() < end:
    for _ in range(256):
        try:
            s.send(f, socket.MSG_DONTWAIT)
            sent += 1
        except BlockingIOError:
            pass
print(sent)
EOF
)
	sleep 0.5
	after=$(guest_status net.counted)
	python3 -c "
import json, sys
sent, got, secs, length = $sent, $after - $before, $seconds, $len
print(json.dumps({'bench': 'net', 'op': 'rx', 'host': 'native-$kind', 'guest': 'probe',
                  'frame_bytes': length, 'seconds': secs, 'sent_s': round(sent / secs),
                  'frames_s': round(got / secs), 'mib_s': round(got * length / secs / 2**20, 1),
                  'drop_pct': round(100 * (1 - got / sent), 1) if sent else None}))"

	# echo: WINDOW frames in flight, round trips per second.
	python3 - "$ns" "$len" "$mac" "native-$kind" <<'EOF'
import ctypes, json, os, select, socket, sys, time
ns, length, mac, host = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open("/run/netns/" + ns, os.O_RDONLY)
libc.setns(fd, 0x40000000)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))
s.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)
s.bind(("fkb0", 0x88b5))
window, total = 32, 50000
f = bytes.fromhex(mac.replace(":", "")) + bytes.fromhex("020000000099") + b"\x88\xb5" + b"forkd-host"
f += bytes(length - len(f))
# Drain what earlier rows left behind.
while select.select([s], [], [], 0.2)[0]:
    s.recv(4096)
sent = back = 0
t0 = time.monotonic()
while back < total:
    while sent < total and sent - back < window:
        s.send(f)
        sent += 1
    r, _, _ = select.select([s], [], [], 2.0)
    if not r:
        # Lost in the tap's queue: refill the window.
        sent = back
        continue
    data, addr = s.recvfrom(4096)
    if addr[2] != socket.PACKET_OUTGOING and data[14:24] == b"forkd-echo":
        back += 1
dt = time.monotonic() - t0
print(json.dumps({"bench": "net", "op": "echo", "host": host, "guest": "probe",
                  "frame_bytes": length, "window": window, "round_trips": back,
                  "frames_s": round(back / dt), "mib_s": round(back * length / dt / 2**20, 1)}))
EOF
done
echo poweroff >&3
wait "$vmm_pid" || true
vmm_pid=
