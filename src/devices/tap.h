/* SPDX-License-Identifier: MIT */
/*
 * A Linux tap device for virtio-net: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR with
 * the 12-byte virtio 1.x header, non-blocking, close-on-exec. Attaches to an
 * existing tap of that name (which must not be open elsewhere) or creates it.
 */
#ifndef FORKD_DEVICES_TAP_H
#define FORKD_DEVICES_TAP_H

#include <stdint.h>

#include "util/err.h"

/* The header size set with TUNSETVNETHDRSZ: virtio_net_hdr plus num_buffers. */
#define TAP_VNET_HDR_SIZE 12

/*
 * Opens tap `name`; with netns non-NULL and non-empty, inside the network
 * namespace /run/netns/<netns> (on a short-lived thread, so no other thread
 * of the VMM ever changes namespace). Offloads start off. Returns the fd or
 * -errno with a message naming the tap, the namespace and the cause.
 */
int tap_open(const char *name, const char *netns, struct fk_err *err);

/* TUN_F_* bits for TUNSETOFFLOAD (what the tap may hand us); 0 or -errno. */
int tap_set_offload(int fd, unsigned flags, struct fk_err *err);

#endif
