#!/bin/sh
# Inside the nested test host (L1), run by forkd-init as its command
# (scripts/testhost.sh puts "-- sh /etc/testhost-init.sh" on the kernel
# command line). Builds the machine's userland from virtiofs: the machine's
# / read-only, the checkout and the run directory read-write, fresh /proc,
# /sys, /dev, /tmp and /run; then runs <run>/cmd.sh there with its output on
# ttyS1 (QEMU's stdout) and writes the exit status to <run>/status.
# Progress and errors go to the console (ttyS0, the console log).
set -u

arg() { sed -n "s/.*forkd\.th\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
run=$(arg run)
checkout=$(arg checkout)
interactive=$(arg interactive)
out=/dev/ttyS1

fail() {
	echo "testhost-init: error: $*"
	echo "testhost: error: inside the nested host: $*" >"$out"
	exit 125
}

[ -n "$run" ] && [ -n "$checkout" ] || fail "forkd.th.run= or forkd.th.checkout= missing from the kernel command line"
# The modules forkd-init loaded: KVM must have come up.
[ -c /dev/kvm ] || fail "/dev/kvm did not appear after loading kvm and kvm_amd/kvm_intel (is SVM/VMX exposed by QEMU's -cpu?)"

host=/mnt/host
root=/newroot
mkdir -p "$host" "$root"
mount -t virtiofs hostroot "$host" || fail "mount -t virtiofs hostroot failed"
# The machine's / read-only: a bind mount with its own ro flag, so the
# checkout and run directory below can stay writable through the same share.
mount --bind "$host" "$root" && mount -o remount,bind,ro "$root" || fail "read-only bind of / failed"
mount -t proc proc "$root/proc" || fail "mount proc"
mount -t sysfs sysfs "$root/sys" || fail "mount sysfs"
mount -t devtmpfs devtmpfs "$root/dev" || fail "mount devtmpfs"
mkdir -p "$root/dev/pts" "$root/dev/shm"
mount -t devpts devpts "$root/dev/pts"
mount -t tmpfs -o mode=1777 shm "$root/dev/shm"
for d in /tmp /var/tmp /run /root; do
	mount -t tmpfs -o mode=1777 tmpfs "$root$d" || fail "mount tmpfs on $d"
done
chmod 0700 "$root/root"
# After the tmpfs mounts: a checkout under /tmp or /root (a CI clone) stays visible.
mkdir -p "$root$checkout" 2>/dev/null
mount --bind "$host$checkout" "$root$checkout" || fail "bind of the checkout $checkout failed"
mkdir -p "$root/run/testhost"
mount --bind "$host$run" "$root/run/testhost" || fail "bind of the run directory $run failed"
echo "testhost-init: ready: $(nproc) CPUs, $(sed -n 's/MemTotal: *//p' /proc/meminfo), /dev/kvm"

# A heartbeat for scripts/testhost.sh, which tells a frozen nested host
# (its kernel stuck: no heartbeat) from a command that is merely slow.
(while :; do date +%s >"$host$run/heartbeat"; sleep 2; done) &
heartbeat=$!

if [ "$interactive" = 1 ]; then
	stty -F "$out" sane
	chroot "$root" /bin/bash /run/testhost/cmd.sh <"$out" >"$out" 2>&1
else
	# Raw: no \n -> \r\n translation and no echo on the stream to the host.
	stty -F "$out" raw -echo
	chroot "$root" /bin/bash /run/testhost/cmd.sh </dev/null >"$out" 2>&1
fi
status=$?
kill "$heartbeat" 2>/dev/null
echo "$status" >"$host$run/status.tmp" && mv "$host$run/status.tmp" "$host$run/status"
sync
echo "testhost-init: command exited with status $status"
exit 0
