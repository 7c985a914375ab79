#!/usr/bin/env bash
# The sandbox demo: a Linux VM from a root filesystem image with python3 and
# numpy boots once, a long-lived Python process in it imports numpy, and the
# VM is BRANCHed into 8 children. Each child runs a different computation
# against the numpy that is already imported, through `forkd exec`, and shows
# that its os.urandom differs from every other child's. Prints the time from
# the BRANCH request to the first answer in a child, and the cold path (boot
# plus import) it replaces, also as JSON rows:
#   {"bench":"sandbox","op":"numpy_cold","host":H,"ms":N}
#   {"bench":"sandbox","op":"numpy_branch","host":H,"ms":N,"children":8}
# A Linux guest needs hardware virtualization; elsewhere this runs inside the
# nested test host (scripts/testhost.sh) and says so: its timings measure an
# emulator, not forkd.
#
#   scripts/demo-sandbox.sh [CHILDREN]
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
# shellcheck source=scripts/kvm-kind.sh
. scripts/kvm-kind.sh
# forkd-vmm --image takes vmlinux and initramfs.cpio from here.
export FORKD_IMAGES=${FORKD_IMAGES:-$(default_images_dir)}

kids=${1:-8}
case "$kids" in [1-9] | [1-9][0-9]) ;; *) echo "demo-sandbox: CHILDREN '$kids': expected 1..99" >&2; exit 2 ;; esac
image=forkd-demo-numpy
if [ "${FORKD_DEMO_INSIDE:-0}" != 1 ]; then
	make -s -j2 build/forkd-vmm build/forkd build/guest/forkd-agent images
	echo "== root filesystem image '$image': Debian bookworm + python3-numpy (cached after the first build)"
	build/forkd image build "$image" --packages python3,python3-numpy
	if [ "$(kvm_kind)" != hardware ]; then
		echo "== no hardware virtualization here: running the demo inside the nested test host"
		echo "   (scripts/testhost.sh; everything below is emulated, so its times are not forkd's)"
		FORKD_DEMO_INSIDE=1 exec scripts/testhost.sh -- scripts/demo-sandbox.sh "$kids"
	fi
fi
host=${FORKD_TESTHOST_KIND:-native}
ms() { echo $((($(date +%s%N) - $1) / 1000000)); }

work=$(mktemp -d "${TMPDIR:-/tmp}/forkd-demo-sandbox.XXXXXX")
vmm_pid=
cleanup() {
	for s in "$work"/branch/child-*/control.sock "$work/control.sock"; do
		[ -S "$s" ] && build/forkd vm shutdown --socket "$s" >/dev/null 2>&1 || true
	done
	[ -n "$vmm_pid" ] && { kill "$vmm_pid" 2>/dev/null; wait "$vmm_pid" 2>/dev/null; } || true
	rm -rf "$work"
}
trap cleanup EXIT

# The warm process: imports numpy once, then serves each request (Python source)
# in a forked child of itself, so every request finds numpy already imported.
cat >"$work/warm.py" <<'EOF'
import contextlib, io, os, socket, sys
import numpy as np
srv = socket.socket(socket.AF_UNIX)
srv.bind("/run/warm.sock")
srv.listen(64)
print("warm: numpy", np.__version__, "imported", flush=True)
while True:
    conn, _ = srv.accept()
    if os.fork() == 0:
        code = conn.makefile("rb").read().decode()
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                exec(code, {"np": np, "os": os})
        except Exception as e:
            out.write("error: %r\n" % e)
        conn.sendall(out.getvalue().encode())
        conn.close()
        os._exit(0)
    conn.close()
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                break
        except ChildProcessError:
            break
EOF
# A small client: python3 -S skips site, and imports nothing heavy.
ask='import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect("/run/warm.sock"); s.sendall(sys.argv[1].encode()); s.shutdown(1); b=b"".join(iter(lambda: s.recv(65536), b"")); print(b.decode(), end="")'

echo "== boot: image '$image' (read-only root + overlay in guest RAM), forkd-agent over vsock"
t0=$(date +%s%N)
build/forkd-vmm --image "$image" --mem 1G --cpus 2 --vsock "$work/vsock.sock" \
	--control "$work/control.sock" --serial "$work/console.log" --serial-in none 2>"$work/vmm.err" &
vmm_pid=$!
for _ in $(seq 1 1200); do
	build/forkd agent "$work/vsock.sock" ping >/dev/null 2>&1 && break
	kill -0 "$vmm_pid" 2>/dev/null || { cat "$work/vmm.err" "$work/console.log" >&2; exit 1; }
	sleep 0.1
done
echo "   agent answering after $(ms "$t0") ms"
build/forkd cp "$work/warm.py" "$work/vsock.sock:/root/warm.py" >/dev/null
build/forkd exec "$work/vsock.sock" -- setsid -f sh -c 'python3 /root/warm.py >/run/warm.log 2>&1'
for _ in $(seq 1 1200); do
	build/forkd exec "$work/vsock.sock" -- test -S /run/warm.sock 2>/dev/null && break
	sleep 0.1
done
build/forkd exec "$work/vsock.sock" -- cat /run/warm.log
cold_ms=$(ms "$t0")
echo "   cold path: VM start to numpy imported and serving: $cold_ms ms"

echo "== BRANCH into $kids children while the warm process waits for work"
t1=$(date +%s%N)
build/forkd vm call --socket "$work/control.sock" \
	"{\"cmd\":\"branch\",\"n\":$kids,\"dir\":\"$work/branch\"}" >"$work/branch.json"
grep -E '"pause_us"' "$work/branch.json" | head -n1 | sed 's/^ */   source paused: /'
first_ms=
for k in $(seq 0 $((kids - 1))); do
	child=$work/branch/child-$k
	code="a = np.arange(1, $((k + 2)) * 100000, dtype=np.float64)
print('child $k: sum of 1/n for n < %d = %.6f; urandom %s' % (a.size + 1, (1 / a).sum(), os.urandom(8).hex()))"
	for _ in $(seq 1 600); do
		out=$(build/forkd exec "$child" -- python3 -S -c "$ask" "$code" 2>/dev/null) && break
		sleep 0.05
	done
	[ -n "$first_ms" ] || first_ms=$(ms "$t1")
	echo "   $out"
	echo "$out" | sed -n 's/.*urandom \([0-9a-f]*\).*/\1/p' >>"$work/urandom"
done
distinct=$(sort -u "$work/urandom" | wc -l)
echo "   $distinct of $kids children read different os.urandom bytes"
[ "$distinct" = "$kids" ] || { echo "demo-sandbox: children shared RNG output" >&2; exit 1; }
echo "   BRANCH request to the first child's answer: $first_ms ms (vs $cold_ms ms cold)"
echo "{\"bench\":\"sandbox\",\"op\":\"numpy_cold\",\"host\":\"$host\",\"ms\":$cold_ms}"
echo "{\"bench\":\"sandbox\",\"op\":\"numpy_branch\",\"host\":\"$host\",\"ms\":$first_ms,\"children\":$kids}"
