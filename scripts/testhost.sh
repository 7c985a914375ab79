#!/usr/bin/env bash
# The nested test host: a KVM host inside QEMU, for machines whose own
# /dev/kvm cannot run what a test needs (none at all, or KVM-PVM, which
# cannot run a Linux guest). docs/testing.md has the whole story.
#
#   scripts/testhost.sh [options] -- COMMAND [ARG...]
#
# Boots Debian's cloud kernel (from `make images`) in QEMU with -cpu max
# (TCG emulates AMD SVM with nested paging; with -accel kvm where this
# machine's KVM offers nested SVM/VMX), loads kvm and kvm_amd/kvm_intel,
# mounts this machine's / read-only and the checkout read-write over
# virtiofs, runs COMMAND in the current directory, streams its output and
# exits with its status.
#
# Options (environment in brackets):
#   --mem SIZE        L1 memory, e.g. 6G [FORKD_TESTHOST_MEM, default 6G]
#   --cpus N          L1 vCPUs [FORKD_TESTHOST_CPUS, default 1 under TCG (docs/testing.md,
#                     Faults), this machine's cores with --accel kvm]
#   --timeout SEC     kill the nested host after SEC seconds [FORKD_TESTHOST_TIMEOUT, 3600]
#   --accel tcg|kvm|auto   [FORKD_TESTHOST_ACCEL, default auto: kvm only with nested SVM/VMX]
#   --console FILE    keep the nested host's console log (kernel + init) in FILE
#   --interactive     attach this terminal to the command (e.g. -- bash -i)
# FORKD_TESTHOST_APPEND adds to the nested host's kernel command line.
# FORKD_TESTHOST_TCG_THREAD=single|multi: QEMU's TCG threading with --cpus above 1
# (default single; docs/testing.md).
# Other environment: FORKD_QEMU, FORKD_VIRTIOFSD (the programs), FORKD_IMAGES
# (where `make images` put bzImage and testhost-initramfs.cpio).
#
# Exit status: COMMAND's; 124 when the timeout fired; 125 when the nested host
# itself failed (each with a one-line "testhost: error: ..." on stderr).
set -euo pipefail

# Physical paths: L1 resolves them under the shared / (a symlink would point elsewhere there).
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
# shellcheck source=scripts/kvm-kind.sh
. "$repo/scripts/kvm-kind.sh"

die() {
	echo "testhost: error: $*" >&2
	exit 125
}

mem=${FORKD_TESTHOST_MEM:-6G}
cpus=${FORKD_TESTHOST_CPUS:-}
timeout_s=${FORKD_TESTHOST_TIMEOUT:-3600}
accel=${FORKD_TESTHOST_ACCEL:-auto}
tcg_thread=${FORKD_TESTHOST_TCG_THREAD:-single}
case "$tcg_thread" in multi | single) ;; *) die "FORKD_TESTHOST_TCG_THREAD='$tcg_thread': expected multi or single" ;; esac
console_keep=
interactive=0
while [ $# -gt 0 ]; do
	case "$1" in
	--mem) mem=${2:?--mem needs a size}; shift 2 ;;
	--cpus) cpus=${2:?--cpus needs a count}; shift 2 ;;
	--timeout) timeout_s=${2:?--timeout needs seconds}; shift 2 ;;
	--accel) accel=${2:?--accel needs tcg, kvm or auto}; shift 2 ;;
	--console) console_keep=${2:?--console needs a file}; shift 2 ;;
	--interactive) interactive=1; shift ;;
	--) shift; break ;;
	-h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//;$d'; exit 0 ;;
	*) die "unknown option '$1' (expected --mem, --cpus, --timeout, --accel, --console, --interactive, then -- COMMAND)" ;;
	esac
done
[ $# -gt 0 ] || die "no command: usage: scripts/testhost.sh [options] -- COMMAND [ARG...]"

# Inputs.
mem_mib=$(size_to_mib "$mem") || die "--mem '$mem': expected a size such as 6G or 4096M"
[ "$mem_mib" -ge 1024 ] || die "--mem '$mem': the nested host needs at least 1G"
[[ "$timeout_s" =~ ^[1-9][0-9]*$ ]] || die "--timeout '$timeout_s': expected whole seconds > 0"
case "$accel" in
auto) if [ "$(kvm_nested_capable)" = yes ]; then accel=kvm; else accel=tcg; fi ;;
tcg) ;;
kvm) [ "$(kvm_nested_capable)" = yes ] || die "--accel kvm: this machine's /dev/kvm ($(kvm_kind)) offers no nested SVM/VMX" ;;
*) die "--accel '$accel': expected tcg, kvm or auto" ;;
esac
# Under TCG, one L1 vCPU: with two, QEMU's multi-threaded TCG raced on code that
# another vCPU had just rewritten (L1 froze, guests triple-faulted), and
# single-threaded TCG's 100 ms round-robin slices starved Linux's SMP bring-up
# in L1's own guests. L1's scheduler shares its one CPU among their vCPUs well.
if [ -z "$cpus" ]; then
	if [ "$accel" = tcg ]; then cpus=1; else cpus=$(nproc); fi
fi
[[ "$cpus" =~ ^[1-9][0-9]*$ ]] && [ "$cpus" -le 64 ] || die "--cpus '$cpus': expected 1 to 64"
qemu=${FORKD_QEMU:-qemu-system-x86_64}
virtiofsd=${FORKD_VIRTIOFSD:-/usr/lib/qemu/virtiofsd}
command -v "$qemu" >/dev/null || die "QEMU not found ('$qemu'): install qemu-system-x86 (scripts/install-deps.sh)"
[ -x "$virtiofsd" ] || die "virtiofsd not found ('$virtiofsd'): it ships in qemu-system-common (scripts/install-deps.sh)"
images=${FORKD_IMAGES:-$(default_images_dir)}
kernel=${FORKD_TESTHOST_KERNEL:-$images/bzImage}
initrd=$images/testhost-initramfs.cpio
[ -s "$kernel" ] || die "$kernel missing: run 'make images' first"
[ -s "$initrd" ] || die "$initrd missing: run 'make images' first"
# Memory: guest RAM plus QEMU's own (~300 MiB with TCG's translation cache).
avail_mib=$(($(sed -n 's/^MemAvailable: *\([0-9]*\) kB/\1/p' /proc/meminfo) / 1024))
[ $((mem_mib + 512)) -le "$avail_mib" ] ||
	die "--mem $mem: this machine has only $avail_mib MiB available, the nested host needs $mem_mib MiB + 512 MiB for QEMU"

# The command runs in the current directory, which must lie inside what L1 sees writable.
cwd=$(pwd -P)
case "$cwd/" in
"$repo"/*) ;;
*) die "run from inside the checkout $repo (the nested host sees only it writable; now in $cwd)" ;;
esac

run=$(mktemp -d "${TMPDIR:-/tmp}/forkd-testhost.XXXXXX")
run=$(realpath "$run")
qemu_pid= fsd_pid=
cleanup() {
	local pid
	for pid in $qemu_pid $fsd_pid; do kill -KILL "$pid" 2>/dev/null || true; done
	for pid in $qemu_pid $fsd_pid; do wait "$pid" 2>/dev/null || true; done
	if [ -n "$console_keep" ] && [ -f "$run/console.log" ]; then cp "$run/console.log" "$console_keep"; fi
	rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
console_tail() {
	echo "testhost: last lines of the nested host's console ($run/console.log):" >&2
	tail -n "${1:-25}" "$run/console.log" 2>/dev/null | sed 's/^/  | /' >&2 || true
}

# The command, with the FORKD_* environment, as a script in the run directory.
{
	echo "cd $(printf '%q' "$cwd") || exit 125"
	echo "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp"
	echo "export FORKD_TESTHOST_KIND=nested-$accel"
	while IFS='=' read -r name _; do
		case "$name" in FORKD_TESTHOST*) continue ;; FORKD_* | CI | TERM | LANG) ;; *) continue ;; esac
		echo "export $name=$(printf '%q' "${!name}")"
	done < <(env)
	printf 'exec'
	printf ' %q' "$@"
	echo
} >"$run/cmd.sh"

# virtiofsd serves this machine's / (sandbox=chroot: pivot_root into / fails with EBUSY
# on these machines); L1 mounts it read-only but for the
# checkout and the run directory. Both helpers die with this script.
setpriv --pdeathsig KILL -- "$virtiofsd" --socket-path="$run/virtiofs.sock" -o source=/ \
	-o cache=auto -o sandbox=chroot -o log_level=err >"$run/virtiofsd.log" 2>&1 &
fsd_pid=$!
for _ in $(seq 1 100); do [ -S "$run/virtiofs.sock" ] && break; sleep 0.05; done
[ -S "$run/virtiofs.sock" ] || die "virtiofsd did not start: $(tr '\n' ' ' <"$run/virtiofsd.log")"

if [ "$accel" = kvm ]; then accel_args=(-accel kvm -cpu host); else accel_args=(-accel tcg,thread=$tcg_thread -cpu max); fi
# kvm.enable_pmu=0: no perf events for guests' PMU counters, so starting and
# stopping VMs does not flip the scheduler's perf static keys; each flip live-patches
# kernel text with INT3, and that is where frozen nested hosts were found stuck
# (docs/testing.md).
append="console=ttyS0 panic=-1 quiet kvm.enable_pmu=0 ${FORKD_TESTHOST_APPEND:-} forkd.th.run=$run forkd.th.checkout=$repo forkd.th.interactive=$interactive -- sh /etc/testhost-init.sh"
qemu_args=("${accel_args[@]}" -machine pc -smp "$cpus" -m "${mem_mib}M"
	-object "memory-backend-memfd,id=mem,size=${mem_mib}M,share=on" -numa node,memdev=mem
	-kernel "$kernel" -initrd "$initrd" -append "$append"
	-nodefaults -display none -no-reboot
	-serial "file:$run/console.log"
	-chardev stdio,id=out,signal=off -serial chardev:out
	-chardev "socket,id=fs,path=$run/virtiofs.sock" -device vhost-user-fs-pci,chardev=fs,tag=hostroot
	-monitor "unix:$run/monitor.sock,server=on,wait=off")
start=$(date +%s)
if [ "$interactive" = 1 ]; then
	setpriv --pdeathsig KILL -- "$qemu" "${qemu_args[@]}" 2>"$run/qemu.err" &
else
	setpriv --pdeathsig KILL -- "$qemu" "${qemu_args[@]}" </dev/null 2>"$run/qemu.err" &
fi
qemu_pid=$!

# Each vCPU's RIP, from QEMU's monitor, to find where a frozen nested host is stuck.
monitor_rips() {
	command -v socat >/dev/null || return 0
	echo "testhost: the nested host's vCPUs (QEMU monitor, info registers -a):" >&2
	printf 'info registers -a\n' | timeout 10 socat -t 5 - "UNIX-CONNECT:$run/monitor.sock" 2>/dev/null |
		tr -d '\r' | grep -aE '^(CPU#|RIP=)' | sed 's/^/  | /' >&2 || true
}

# Wait for QEMU to end, the timeout, or a frozen nested host: its init writes a
# heartbeat every 2 s once it runs the command (images/testhost-init.sh).
freeze_s=${FORKD_TESTHOST_FREEZE:-60}
while kill -0 "$qemu_pid" 2>/dev/null; do
	now=$(date +%s)
	if [ $((now - start)) -ge "$timeout_s" ]; then
		echo "testhost: error: timed out after ${timeout_s} s: killed the nested host (QEMU and virtiofsd)" >&2
		console_tail 40
		exit 124
	fi
	if [ -f "$run/heartbeat" ] && [ $((now - $(stat -c %Y "$run/heartbeat"))) -ge "$freeze_s" ]; then
		echo "testhost: error: the nested host froze: no heartbeat from its init for ${freeze_s} s; killed it (QEMU and virtiofsd)" >&2
		monitor_rips
		console_tail 40
		exit 125
	fi
	sleep 0.2
done
qemu_status=0
wait "$qemu_pid" || qemu_status=$?
qemu_pid=
if [ ! -f "$run/status" ]; then
	if ! grep -q '^READY' "$run/console.log" 2>/dev/null; then
		echo "testhost: error: the nested host did not boot (QEMU exited with status $qemu_status before forkd-init was READY): $(head -c 300 "$run/qemu.err" | tr '\n' ' ')" >&2
	else
		echo "testhost: error: the nested host stopped (QEMU status $qemu_status) before the command reported an exit status" >&2
	fi
	console_tail
	exit 125
fi
status=$(cat "$run/status")
[[ "$status" =~ ^[0-9]+$ ]] || die "bad exit status '$status' from the nested host"
exit "$status"
