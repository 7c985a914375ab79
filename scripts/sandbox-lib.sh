# shellcheck shell=bash
# Sourced by scripts/demo-sandbox.sh and bench/sandbox.sh (from the checkout,
# with build/forkd-vmm and build/forkd built): a Linux sandbox VM with
# forkd-agent, and the numpy measurement both of them print as JSON rows:
#   {"bench":"sandbox","op":"numpy_cold",H,"ms":N}
#       VM start to a warm Python process that imported numpy serving requests
#   {"bench":"sandbox","op":"numpy_branch",H,"ms":N,"children":K,"rng_distinct":B}
#       BRANCH request (the warm process waiting for work) to the first answer
#       computed in a child against the already-imported numpy
# H is "host":"native", or "host":"nested","tcg":true|false inside the nested
# test host: its timings measure an emulator, not forkd.
# Progress lines go to sandbox_say's fd ($sandbox_say_fd, default 1).

sandbox_numpy_image=forkd-demo-numpy
sandbox_say_fd=${sandbox_say_fd:-1}
sandbox_vmm_pid=
sandbox_dir=

sandbox_say() { echo "$@" >&"$sandbox_say_fd"; }
sandbox_ms() { echo $((($(date +%s%N) - $1) / 1000000)); }

# The host fields of a row (bench/sandbox.c's host_fields says the same).
sandbox_host_fields() {
	case "${FORKD_TESTHOST_KIND:-native}" in
	nested-tcg) echo '"host":"nested","tcg":true' ;;
	nested-kvm) echo '"host":"nested","tcg":false' ;;
	*) echo '"host":"native"' ;;
	esac
}

# Builds (or finds cached) the numpy root filesystem image; outside the nested
# host, which sees /var/cache read-only.
sandbox_numpy_image_build() {
	build/forkd image build "$sandbox_numpy_image" --packages python3,python3-numpy
}

# sandbox_boot DIR FORKD-VMM-ARGS...: starts forkd-vmm with DIR/vsock.sock,
# DIR/control.sock and DIR/console.log and waits (120 s at most) for its agent.
sandbox_boot() {
	sandbox_dir=$1
	shift
	mkdir -p "$sandbox_dir"
	build/forkd-vmm "$@" --vsock "$sandbox_dir/vsock.sock" --control "$sandbox_dir/control.sock" \
		--serial "$sandbox_dir/console.log" --serial-in none 2>"$sandbox_dir/vmm.err" &
	sandbox_vmm_pid=$!
	for _ in $(seq 1 1200); do
		build/forkd agent "$sandbox_dir/vsock.sock" ping >/dev/null 2>&1 && return 0
		kill -0 "$sandbox_vmm_pid" 2>/dev/null || break
		sleep 0.1
	done
	echo "sandbox: the agent never answered (forkd-vmm $*); the guest's console:" >&2
	tail -n 20 "$sandbox_dir/console.log" "$sandbox_dir/vmm.err" >&2
	return 1
}

# Shuts down the BRANCH children of the last sandbox_boot and stops its VMM;
# safe in an EXIT trap under set -e.
sandbox_stop() {
	local s
	[ -n "$sandbox_dir" ] || return 0
	for s in "$sandbox_dir"/branch/child-*/control.sock "$sandbox_dir/control.sock"; do
		if [ -S "$s" ]; then build/forkd vm shutdown --socket "$s" >/dev/null 2>&1 || true; fi
	done
	if [ -n "$sandbox_vmm_pid" ]; then
		kill "$sandbox_vmm_pid" 2>/dev/null || true
		wait "$sandbox_vmm_pid" 2>/dev/null || true
	fi
	sandbox_vmm_pid=
	sandbox_dir=
}

# The warm process: imports numpy once, then serves each request (Python source)
# in a forked child of itself, so every request finds numpy already imported.
sandbox_warm_py='import contextlib, io, os, socket, sys
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
'
# A small client: python3 -S skips site, and imports nothing heavy.
sandbox_ask='import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect("/run/warm.sock"); s.sendall(sys.argv[1].encode()); s.shutdown(1); b=b"".join(iter(lambda: s.recv(65536), b"")); print(b.decode(), end="")'

# sandbox_numpy_cold DIR: the cold path. Boots the numpy image (read-only root
# + overlay in guest RAM) and starts the warm process; sets sandbox_cold_ms.
sandbox_numpy_cold() {
	local t0
	sandbox_say "== boot: image '$sandbox_numpy_image' (read-only root + overlay in guest RAM), forkd-agent over vsock"
	t0=$(date +%s%N)
	sandbox_boot "$1" --image "$sandbox_numpy_image" --mem 1G --cpus 2
	sandbox_say "   agent answering after $(sandbox_ms "$t0") ms"
	printf '%s' "$sandbox_warm_py" >"$1/warm.py"
	build/forkd cp "$1/warm.py" "$1/vsock.sock:/root/warm.py" >/dev/null
	# The agent kills what is left of an exec's process group when the exec
	# ends (docs/agent-protocol.md), so the exec waits, in the guest, until the
	# warm process serves: by then it has left the group (setsid runs first).
	if ! build/forkd exec "$1/vsock.sock" -- sh -c 'setsid python3 /root/warm.py >/run/warm.log 2>&1 </dev/null &
		i=0
		while [ ! -S /run/warm.sock ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done
		test -S /run/warm.sock'; then
		echo "sandbox: the warm process never served on /run/warm.sock; its log:" >&2
		build/forkd exec "$1/vsock.sock" -- cat /run/warm.log >&2 || true
		return 1
	fi
	sandbox_say "$(build/forkd exec "$1/vsock.sock" -- cat /run/warm.log)"
	sandbox_cold_ms=$(sandbox_ms "$t0")
	sandbox_say "   cold path: VM start to numpy imported and serving: $sandbox_cold_ms ms"
}

# sandbox_numpy_branch DIR KIDS: BRANCHes the VM of sandbox_numpy_cold into
# KIDS children, each computing against the imported numpy and reading
# os.urandom; sets sandbox_branch_ms (request to the first child's answer) and
# sandbox_rng_distinct (true when every child's bytes differed).
sandbox_numpy_branch() {
	local dir=$1 kids=$2 t1 k child code out distinct
	sandbox_say "== BRANCH into $kids children while the warm process waits for work"
	t1=$(date +%s%N)
	build/forkd vm call --socket "$dir/control.sock" \
		"{\"cmd\":\"branch\",\"n\":$kids,\"dir\":\"$dir/branch\"}" >"$dir/branch.json"
	sandbox_say "$(grep -E '"pause_us"' "$dir/branch.json" | head -n1 | sed 's/^ */   source paused: /')"
	sandbox_branch_ms=
	: >"$dir/urandom"
	for k in $(seq 0 $((kids - 1))); do
		child=$dir/branch/child-$k
		code="a = np.arange(1, $((k + 2)) * 100000, dtype=np.float64)
print('child $k: sum of 1/n for n < %d = %.6f; urandom %s' % (a.size + 1, (1 / a).sum(), os.urandom(8).hex()))"
		out=
		for _ in $(seq 1 600); do
			out=$(build/forkd exec "$child" -- python3 -S -c "$sandbox_ask" "$code" 2>/dev/null) && break
			sleep 0.05
		done
		[ -n "$out" ] || { echo "sandbox: child $k never answered through the warm process" >&2; return 1; }
		[ -n "$sandbox_branch_ms" ] || sandbox_branch_ms=$(sandbox_ms "$t1")
		sandbox_say "   $out"
		echo "$out" | sed -n 's/.*urandom \([0-9a-f]*\).*/\1/p' >>"$dir/urandom"
	done
	distinct=$(sort -u "$dir/urandom" | wc -l)
	sandbox_say "   $distinct of $kids children read different os.urandom bytes"
	if [ "$distinct" = "$kids" ]; then sandbox_rng_distinct=true; else sandbox_rng_distinct=false; fi
	sandbox_say "   BRANCH request to the first child's answer: $sandbox_branch_ms ms (vs $sandbox_cold_ms ms cold)"
}

# sandbox_numpy_rows KIDS: the two JSON rows of the last measurement, on stdout.
sandbox_numpy_rows() {
	local h
	h=$(sandbox_host_fields)
	echo "{\"bench\":\"sandbox\",\"op\":\"numpy_cold\",$h,\"ms\":$sandbox_cold_ms}"
	echo "{\"bench\":\"sandbox\",\"op\":\"numpy_branch\",$h,\"ms\":$sandbox_branch_ms,\"children\":$1,\"rng_distinct\":$sandbox_rng_distinct}"
}
