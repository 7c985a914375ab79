/* SPDX-License-Identifier: MIT */
/*
 * Frames through a VM's tap from the host side, for tests of VMs with
 * --net-policy: an AF_PACKET socket on tap0 inside the VM's namespace, and
 * the probe `net` workload's echo (guest/probe/README.md): a frame of
 * ethertype 0x88b5 sent to the guest's MAC comes back with "forkd-echo "
 * in front of its text.
 */
#ifndef FORKD_TESTS_TAP_FRAMES_H
#define FORKD_TESTS_TAP_FRAMES_H

#include <stddef.h>
#include <stdint.h>

#define TAP_FRAMES_ETHERTYPE 0x88b5

/* The host end of namespace ns's tap0 (ethertype 0x88b5 only); fails the test if it can't. */
int tap_frames_socket(const char *ns);

/* The next frame the guest sent (not one we sent), its length, or -1 within timeout_ms. */
int tap_frames_recv(int fd, uint8_t *buf, size_t cap, int timeout_ms);

/*
 * Builds "forkd-host <tag>" to the guest's MAC (f: at least 128 bytes);
 * returns its length (padded to 60).
 */
int tap_frames_host_frame(uint8_t *f, size_t cap, const char *tag);

/* Sends "forkd-host <tag>" once; its echo must come back on fd within timeout_ms. */
void tap_frames_echo_check(int fd, const char *tag, int timeout_ms);

#endif
