/* SPDX-License-Identifier: MIT */
#include "devices/virtqueue.h"

#include <endian.h>
#include <errno.h>
#include <string.h>

/* Host views of the three ring areas, valid for one operation. */
struct virtq_rings {
	uint8_t *desc;
	uint8_t *avail;
	uint8_t *used;
};

/*
 * Resolves all three areas on every operation instead of caching host
 * pointers in struct virtq: the state stays plain data, and a queue state
 * restored from a snapshot cannot smuggle in an unchecked address.
 */
static int virtq_map_rings(const struct guest_mem *mem, const struct virtq *vq, uint16_t max_size,
			   struct virtq_rings *r, struct fk_err *err)
{
	uint32_t num = vq->num;

	if (num == 0 || num > max_size || (num & (num - 1)))
		return fk_fail(err, EINVAL, "queue size %u is not a power of two in [1, %u]", num,
			       max_size);
	if (vq->desc_gpa % VIRTQ_DESC_ALIGN)
		return fk_fail(err, EINVAL, "descriptor table 0x%llx is not %d-byte aligned",
			       (unsigned long long)vq->desc_gpa, VIRTQ_DESC_ALIGN);
	if (vq->avail_gpa % VIRTQ_AVAIL_ALIGN)
		return fk_fail(err, EINVAL, "avail ring 0x%llx is not %d-byte aligned",
			       (unsigned long long)vq->avail_gpa, VIRTQ_AVAIL_ALIGN);
	if (vq->used_gpa % VIRTQ_USED_ALIGN)
		return fk_fail(err, EINVAL, "used ring 0x%llx is not %d-byte aligned",
			       (unsigned long long)vq->used_gpa, VIRTQ_USED_ALIGN);
	r->desc = guest_mem_ptr(mem, vq->desc_gpa, (uint64_t)VIRTQ_DESC_SIZE * num);
	if (!r->desc)
		return fk_fail(err, EINVAL, "descriptor table [0x%llx, +%u) is outside guest RAM",
			       (unsigned long long)vq->desc_gpa, VIRTQ_DESC_SIZE * num);
	r->avail = guest_mem_ptr(mem, vq->avail_gpa, VIRTQ_AVAIL_SIZE(num));
	if (!r->avail)
		return fk_fail(err, EINVAL, "avail ring [0x%llx, +%llu) is outside guest RAM",
			       (unsigned long long)vq->avail_gpa,
			       (unsigned long long)VIRTQ_AVAIL_SIZE(num));
	r->used = guest_mem_ptr(mem, vq->used_gpa, VIRTQ_USED_SIZE(num));
	if (!r->used)
		return fk_fail(err, EINVAL, "used ring [0x%llx, +%llu) is outside guest RAM",
			       (unsigned long long)vq->used_gpa,
			       (unsigned long long)VIRTQ_USED_SIZE(num));
	return 0;
}

void virtq_reset(struct virtq *vq, uint16_t num)
{
	memset(vq, 0, sizeof(*vq));
	vq->num = num;
}

int virtq_check_rings(const struct guest_mem *mem, const struct virtq *vq, uint16_t max_size,
		      struct fk_err *err)
{
	struct virtq_rings r = {0};

	if (max_size > VIRTQ_MAX_SIZE)
		max_size = VIRTQ_MAX_SIZE;
	return virtq_map_rings(mem, vq, max_size, &r, err);
}

/* The guest writes the rings concurrently: every load is a single atomic access. */
static uint16_t load16(const uint8_t *p, int order)
{
	return le16toh(__atomic_load_n((const uint16_t *)p, order));
}

static int avail_pending(const struct virtq *vq, const struct virtq_rings *r, uint16_t *pending,
			 struct fk_err *err)
{
	/* Acquire: ring entries and descriptors are read after the index that covers them. */
	uint16_t avail_idx = load16(r->avail + 2, __ATOMIC_ACQUIRE);
	uint16_t n = (uint16_t)(avail_idx - vq->last_avail_idx);

	if (n > vq->num)
		return fk_fail(err, EINVAL,
			       "avail idx %u is %u entries ahead of the device (%u), more than the "
			       "queue size %u",
			       avail_idx, n, vq->last_avail_idx, vq->num);
	*pending = n;
	return 0;
}

struct virtq_desc_copy {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

static void read_desc(const struct virtq_rings *r, uint16_t idx, struct virtq_desc_copy *d)
{
	const uint64_t *p = (const uint64_t *)(r->desc + (size_t)idx * VIRTQ_DESC_SIZE);
	uint64_t addr = le64toh(__atomic_load_n(&p[0], __ATOMIC_RELAXED));
	uint64_t rest = le64toh(__atomic_load_n(&p[1], __ATOMIC_RELAXED));

	d->addr = addr;
	d->len = (uint32_t)rest;
	d->flags = (uint16_t)(rest >> 32);
	d->next = (uint16_t)(rest >> 48);
}

int virtq_pop(const struct guest_mem *mem, struct virtq *vq, struct virtq_chain *chain,
	      struct fk_err *err)
{
	struct virtq_rings r = {0};
	uint16_t pending = 0, idx, slot;
	uint32_t count = 0;
	int ret;

	ret = virtq_map_rings(mem, vq, VIRTQ_MAX_SIZE, &r, err);
	if (ret)
		return ret;
	ret = avail_pending(vq, &r, &pending, err);
	if (ret)
		return ret;
	if (pending == 0)
		return 0;

	slot = vq->last_avail_idx % vq->num;
	idx = load16(r.avail + 4 + 2 * (size_t)slot, __ATOMIC_RELAXED);
	if (idx >= vq->num)
		return fk_fail(err, EINVAL, "avail ring slot %u: head index %u >= queue size %u",
			       slot, idx, vq->num);
	chain->head = idx;
	chain->nr_segs = 0;
	chain->readable_len = 0;
	chain->writable_len = 0;
	for (;;) {
		struct virtq_desc_copy d;
		struct virtq_seg *seg;
		uint8_t *hva;

		/* Each index is < num, so a chain of more than num descriptors revisits one. */
		if (count == vq->num)
			return fk_fail(err, EINVAL,
				       "chain at head %u is longer than the queue size %u (loop?)",
				       chain->head, vq->num);
		read_desc(&r, idx, &d);
		if (d.flags & VIRTQ_DESC_F_INDIRECT)
			return fk_fail(err, EINVAL,
				       "descriptor %u: INDIRECT flag, but indirect descriptors "
				       "were not offered",
				       idx);
		hva = guest_mem_ptr(mem, d.addr, d.len);
		if (!hva)
			return fk_fail(err, EINVAL,
				       "descriptor %u: buffer [0x%llx, +%u) is outside guest RAM",
				       idx, (unsigned long long)d.addr, d.len);
		seg = &chain->segs[count++];
		seg->gpa = d.addr;
		seg->len = d.len;
		seg->device_writable = d.flags & VIRTQ_DESC_F_WRITE;
		seg->hva = hva;
		if (seg->device_writable)
			chain->writable_len += d.len;
		else
			chain->readable_len += d.len;
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			break;
		if (d.next >= vq->num)
			return fk_fail(err, EINVAL, "descriptor %u: next index %u >= queue size %u",
				       idx, d.next, vq->num);
		idx = d.next;
	}
	chain->nr_segs = (uint16_t)count;
	vq->last_avail_idx++;
	return 1;
}

int virtq_push(const struct guest_mem *mem, struct virtq *vq, uint16_t head, uint32_t len,
	       struct fk_err *err)
{
	struct virtq_rings r = {0};
	uint32_t *elem;
	int ret;

	ret = virtq_map_rings(mem, vq, VIRTQ_MAX_SIZE, &r, err);
	if (ret)
		return ret;
	if (head >= vq->num)
		return fk_fail(err, EINVAL, "used element for head %u >= queue size %u", head,
			       vq->num);
	/*
	 * Diff snapshots: the device wrote this chain's buffers since it popped
	 * it, perhaps after a snapshot collected the pages marked at pop;
	 * resolving them again marks them for the next one (guest_mem.h).
	 */
	if (mem->host_dirty) {
		uint16_t idx = head;

		for (uint32_t n = 0; n < vq->num; n++) {
			struct virtq_desc_copy d;

			read_desc(&r, idx, &d);
			if (d.flags & VIRTQ_DESC_F_WRITE)
				(void)guest_mem_ptr(mem, d.addr, d.len);
			if (!(d.flags & VIRTQ_DESC_F_NEXT) || d.next >= vq->num)
				break;
			idx = d.next;
		}
	}
	elem = (uint32_t *)(r.used + 4 + (size_t)(vq->used_idx % vq->num) * VIRTQ_USED_ELEM_SIZE);
	__atomic_store_n(&elem[0], htole32(head), __ATOMIC_RELAXED);
	__atomic_store_n(&elem[1], htole32(len), __ATOMIC_RELAXED);
	vq->used_idx++;
	/* Release: the driver must see the element once it sees the new index. */
	__atomic_store_n((uint16_t *)(r.used + 2), htole16(vq->used_idx), __ATOMIC_RELEASE);
	return 0;
}

bool virtq_should_interrupt(const struct guest_mem *mem, const struct virtq *vq)
{
	struct virtq_rings r = {0};
	struct fk_err err;

	/*
	 * Full barrier: the used idx store must be visible before we read the
	 * driver's flags, or we could miss a driver that just re-enabled
	 * interrupts after finding the ring empty.
	 */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (virtq_map_rings(mem, vq, VIRTQ_MAX_SIZE, &r, &err))
		return true;
	return !(load16(r.avail, __ATOMIC_RELAXED) & VIRTQ_AVAIL_F_NO_INTERRUPT);
}

bool virtq_has_avail(const struct guest_mem *mem, const struct virtq *vq)
{
	struct virtq_rings r = {0};
	struct fk_err err;

	if (virtq_map_rings(mem, vq, VIRTQ_MAX_SIZE, &r, &err))
		return false;
	return load16(r.avail + 2, __ATOMIC_ACQUIRE) != vq->last_avail_idx;
}
