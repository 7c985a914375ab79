/* SPDX-License-Identifier: MIT */
/* Split virtqueue walking against hostile rings, without a transport. */
#include "virtio_guest.h"

#include <stdlib.h>

#define QNUM 8

struct vq_fixture {
	struct guest_mem mem;
	struct vg_queue q; /* driver side */
	struct virtq vq;   /* device side */
	struct virtq_chain chain;
	struct fk_err err;
};

static int setup(void **state)
{
	struct vq_fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	vg_mem_init(&f->mem);
	f->q = vg_default_queue(QNUM);
	virtq_reset(&f->vq, QNUM);
	f->vq.desc_gpa = f->q.desc;
	f->vq.avail_gpa = f->q.avail;
	f->vq.used_gpa = f->q.used;
	assert_int_equal(virtq_check_rings(&f->mem, &f->vq, QNUM, &f->err), 0);
	f->vq.ready = true;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct vq_fixture *f = *state;

	guest_mem_destroy(&f->mem);
	free(f);
	return 0;
}

/* Pops expecting a ring error whose message contains what; the queue must not advance. */
static void expect_ring_error(struct vq_fixture *f, const char *what)
{
	uint16_t before = f->vq.last_avail_idx;

	assert_int_equal(virtq_pop(&f->mem, &f->vq, &f->chain, &f->err), -EINVAL);
	assert_int_equal(f->err.code, EINVAL);
	if (!strstr(f->err.msg, what))
		fail_msg("error \"%s\" does not mention \"%s\"", f->err.msg, what);
	assert_int_equal(f->vq.last_avail_idx, before);
}

static void test_empty_ring_pops_nothing(void **state)
{
	struct vq_fixture *f = *state;

	assert_false(virtq_has_avail(&f->mem, &f->vq));
	assert_int_equal(virtq_pop(&f->mem, &f->vq, &f->chain, &f->err), 0);
	assert_int_equal(f->vq.last_avail_idx, 0);
}

static void test_pop_chain_segments(void **state)
{
	struct vq_fixture *f = *state;
	const struct virtq_chain *c = &f->chain;

	/* Out-of-order indices: the chain follows next, not the table order. */
	vg_desc(&f->mem, &f->q, 5, 0x10000, 16, VIRTQ_DESC_F_NEXT, 2);
	vg_desc(&f->mem, &f->q, 2, 0x11000, 4096, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 7);
	vg_desc(&f->mem, &f->q, 7, 0x12000, 1, VIRTQ_DESC_F_WRITE, 0);
	vg_publish(&f->mem, &f->q, 5);

	assert_true(virtq_has_avail(&f->mem, &f->vq));
	assert_int_equal(virtq_pop(&f->mem, &f->vq, &f->chain, &f->err), 1);
	assert_int_equal(c->head, 5);
	assert_int_equal(c->nr_segs, 3);
	assert_int_equal(c->segs[0].gpa, 0x10000);
	assert_int_equal(c->segs[0].len, 16);
	assert_false(c->segs[0].device_writable);
	assert_ptr_equal(c->segs[0].hva, guest_mem_ptr(&f->mem, 0x10000, 16));
	assert_int_equal(c->segs[1].gpa, 0x11000);
	assert_int_equal(c->segs[1].len, 4096);
	assert_true(c->segs[1].device_writable);
	assert_int_equal(c->segs[2].gpa, 0x12000);
	assert_true(c->segs[2].device_writable);
	assert_int_equal(c->readable_len, 16);
	assert_int_equal(c->writable_len, 4097);
	assert_int_equal(f->vq.last_avail_idx, 1);
	assert_false(virtq_has_avail(&f->mem, &f->vq));
	assert_int_equal(virtq_pop(&f->mem, &f->vq, &f->chain, &f->err), 0);
}

static void test_push_writes_used_ring_and_wraps(void **state)
{
	struct vq_fixture *f = *state;
	uint32_t id, len;
	int i;

	for (i = 0; i < 3 * QNUM; i++) {
		assert_int_equal(
		    virtq_push(&f->mem, &f->vq, (uint16_t)(i % QNUM), 100 + i, &f->err), 0);
		assert_int_equal(vg_used_idx(&f->mem, &f->q), i + 1);
		vg_used_elem(&f->mem, &f->q, (uint16_t)i, &id, &len);
		assert_int_equal(id, i % QNUM);
		assert_int_equal(len, 100 + i);
	}
	/* The 16-bit index wraps. */
	f->vq.used_idx = 0xffff;
	assert_int_equal(virtq_push(&f->mem, &f->vq, 3, 9, &f->err), 0);
	assert_int_equal(vg_used_idx(&f->mem, &f->q), 0);
	vg_used_elem(&f->mem, &f->q, 0xffff, &id, &len);
	assert_int_equal(id, 3);
	assert_int_equal(len, 9);
	/* A head the device never handed out is refused, not written. */
	assert_int_equal(virtq_push(&f->mem, &f->vq, QNUM, 1, &f->err), -EINVAL);
	assert_int_equal(vg_used_idx(&f->mem, &f->q), 0);
}

static void test_avail_index_wraps(void **state)
{
	struct vq_fixture *f = *state;
	int i;

	f->vq.last_avail_idx = 0xfffe;
	f->q.next_avail = 0xfffe;
	for (i = 0; i < 3; i++) {
		vg_desc(&f->mem, &f->q, (uint16_t)i, 0x10000, 8, 0, 0);
		vg_publish(&f->mem, &f->q, (uint16_t)i);
	}
	for (i = 0; i < 3; i++) {
		assert_int_equal(virtq_pop(&f->mem, &f->vq, &f->chain, &f->err), 1);
		assert_int_equal(f->chain.head, i);
	}
	assert_int_equal(f->vq.last_avail_idx, 1);
	assert_int_equal(virtq_pop(&f->mem, &f->vq, &f->chain, &f->err), 0);
}

static void test_head_index_out_of_range(void **state)
{
	struct vq_fixture *f = *state;

	vg_publish(&f->mem, &f->q, QNUM);
	expect_ring_error(f, "head index 8");
	/* Still broken on retry, never an out-of-bounds read. */
	expect_ring_error(f, "head index");
}

static void test_next_index_out_of_range(void **state)
{
	struct vq_fixture *f = *state;

	vg_desc(&f->mem, &f->q, 0, 0x10000, 16, VIRTQ_DESC_F_NEXT, 0xffff);
	vg_publish(&f->mem, &f->q, 0);
	expect_ring_error(f, "next index 65535");
}

static void test_descriptor_loop(void **state)
{
	struct vq_fixture *f = *state;

	vg_desc(&f->mem, &f->q, 0, 0x10000, 16, VIRTQ_DESC_F_NEXT, 1);
	vg_desc(&f->mem, &f->q, 1, 0x10010, 16, VIRTQ_DESC_F_NEXT, 2);
	vg_desc(&f->mem, &f->q, 2, 0x10020, 16, VIRTQ_DESC_F_NEXT, 0);
	vg_publish(&f->mem, &f->q, 0);
	expect_ring_error(f, "longer than the queue size");
}

static void test_descriptor_self_loop(void **state)
{
	struct vq_fixture *f = *state;

	vg_desc(&f->mem, &f->q, 3, 0x10000, 16, VIRTQ_DESC_F_NEXT, 3);
	vg_publish(&f->mem, &f->q, 3);
	expect_ring_error(f, "longer than the queue size");
}

static void test_chain_of_exactly_num_is_fine(void **state)
{
	struct vq_fixture *f = *state;
	int i;

	for (i = 0; i < QNUM; i++)
		vg_desc(&f->mem, &f->q, (uint16_t)i, 0x10000 + 0x100 * i, 0x100,
			i + 1 < QNUM ? VIRTQ_DESC_F_NEXT : 0, (uint16_t)(i + 1));
	vg_publish(&f->mem, &f->q, 0);
	assert_int_equal(virtq_pop(&f->mem, &f->vq, &f->chain, &f->err), 1);
	assert_int_equal(f->chain.nr_segs, QNUM);
	assert_int_equal(f->chain.readable_len, QNUM * 0x100);
}

static void test_buffer_outside_ram(void **state)
{
	struct vq_fixture *f = *state;

	vg_desc(&f->mem, &f->q, 0, VG_RAM_SIZE, 1, 0, 0);
	vg_publish(&f->mem, &f->q, 0);
	expect_ring_error(f, "outside guest RAM");
}

static void test_buffer_crossing_end_of_ram(void **state)
{
	struct vq_fixture *f = *state;

	vg_desc(&f->mem, &f->q, 0, VG_RAM_SIZE - 16, 17, 0, 0);
	vg_publish(&f->mem, &f->q, 0);
	expect_ring_error(f, "outside guest RAM");
}

static void test_buffer_addr_plus_len_overflows(void **state)
{
	struct vq_fixture *f = *state;

	/* addr + len wraps to a small address inside RAM. */
	vg_desc(&f->mem, &f->q, 0, 0xfffffffffffff000ULL, 0x2000, 0, 0);
	vg_publish(&f->mem, &f->q, 0);
	expect_ring_error(f, "outside guest RAM");
}

static void test_bad_segment_late_in_chain(void **state)
{
	struct vq_fixture *f = *state;

	vg_desc(&f->mem, &f->q, 0, 0x10000, 16, VIRTQ_DESC_F_NEXT, 1);
	vg_desc(&f->mem, &f->q, 1, 0x10000, 16, VIRTQ_DESC_F_NEXT, 2);
	vg_desc(&f->mem, &f->q, 2, 0x1fffff, 2, VIRTQ_DESC_F_WRITE, 0);
	vg_publish(&f->mem, &f->q, 0);
	expect_ring_error(f, "descriptor 2");
}

static void test_zero_length_descriptor(void **state)
{
	struct vq_fixture *f = *state;

	/* Inside RAM: harmless, passed on for the device to judge. */
	vg_desc(&f->mem, &f->q, 0, 0x10000, 0, VIRTQ_DESC_F_NEXT, 1);
	vg_desc(&f->mem, &f->q, 1, 0x10000, 0, VIRTQ_DESC_F_WRITE, 0);
	vg_publish(&f->mem, &f->q, 0);
	assert_int_equal(virtq_pop(&f->mem, &f->vq, &f->chain, &f->err), 1);
	assert_int_equal(f->chain.nr_segs, 2);
	assert_int_equal(f->chain.readable_len + f->chain.writable_len, 0);
	/* Outside RAM: the address itself is still checked. */
	vg_desc(&f->mem, &f->q, 2, VG_RAM_SIZE + 4096, 0, 0, 0);
	vg_publish(&f->mem, &f->q, 2);
	expect_ring_error(f, "outside guest RAM");
}

static void test_indirect_descriptor_refused(void **state)
{
	struct vq_fixture *f = *state;

	vg_desc(&f->mem, &f->q, 0, 0x10000, 16, VIRTQ_DESC_F_INDIRECT, 0);
	vg_publish(&f->mem, &f->q, 0);
	expect_ring_error(f, "INDIRECT");
}

static void test_avail_idx_jump(void **state)
{
	struct vq_fixture *f = *state;
	int i;

	for (i = 0; i < QNUM; i++)
		vg_desc(&f->mem, &f->q, (uint16_t)i, 0x10000, 8, 0, 0);
	/* Exactly num ahead is a full ring: fine. */
	vg_set_avail_idx(&f->mem, &f->q, QNUM);
	assert_int_equal(virtq_pop(&f->mem, &f->vq, &f->chain, &f->err), 1);
	/* More than num ahead of the device cannot be a ring the driver filled honestly. */
	vg_set_avail_idx(&f->mem, &f->q, 1 + QNUM + 1);
	expect_ring_error(f, "ahead");
	vg_set_avail_idx(&f->mem, &f->q, 0x8000);
	expect_ring_error(f, "ahead");
	/* Going backwards looks like a jump of almost 65536. */
	vg_set_avail_idx(&f->mem, &f->q, 0);
	expect_ring_error(f, "ahead");
}

static void expect_rings_refused(struct vq_fixture *f, const char *what)
{
	assert_int_equal(virtq_check_rings(&f->mem, &f->vq, QNUM, &f->err), -EINVAL);
	if (!strstr(f->err.msg, what))
		fail_msg("error \"%s\" does not mention \"%s\"", f->err.msg, what);
	/* pop must refuse the same layout rather than trust "ready". */
	assert_int_equal(virtq_pop(&f->mem, &f->vq, &f->chain, &f->err), -EINVAL);
}

static void test_ring_layout_checks(void **state)
{
	struct vq_fixture *f = *state;
	struct virtq good = f->vq;

	f->vq.desc_gpa = VG_DESC_GPA + 8;
	expect_rings_refused(f, "aligned");
	f->vq = good;
	f->vq.avail_gpa = VG_AVAIL_GPA + 1;
	expect_rings_refused(f, "aligned");
	f->vq = good;
	f->vq.used_gpa = VG_USED_GPA + 2;
	expect_rings_refused(f, "aligned");
	f->vq = good;
	/* The table fits only partly: its last descriptor would be past the end. */
	f->vq.desc_gpa = VG_RAM_SIZE - 16 * (QNUM - 1);
	expect_rings_refused(f, "descriptor table");
	f->vq = good;
	f->vq.avail_gpa = VG_RAM_SIZE - 2;
	expect_rings_refused(f, "avail ring");
	f->vq = good;
	f->vq.used_gpa = 0xfffffffffffffff0ULL;
	expect_rings_refused(f, "used ring");
	f->vq = good;
	f->vq.used_gpa = GUEST_MMIO_HOLE_START;
	expect_rings_refused(f, "used ring");
	f->vq = good;
	f->vq.num = 6;
	expect_rings_refused(f, "power of two");
	f->vq.num = 0;
	expect_rings_refused(f, "power of two");
	f->vq.num = VIRTQ_MAX_SIZE * 2;
	expect_rings_refused(f, "power of two");
	/* Above the device's maximum: refused when the queue goes live. */
	f->vq.num = 2 * QNUM;
	assert_int_equal(virtq_check_rings(&f->mem, &f->vq, QNUM, &f->err), -EINVAL);
	f->vq = good;
	assert_int_equal(virtq_check_rings(&f->mem, &f->vq, QNUM, &f->err), 0);
	/* Avail ring ending exactly at the end of RAM is inside. */
	f->vq.avail_gpa = VG_RAM_SIZE - VIRTQ_AVAIL_SIZE(QNUM);
	assert_int_equal(virtq_check_rings(&f->mem, &f->vq, QNUM, &f->err), 0);
}

static void test_no_interrupt_flag(void **state)
{
	struct vq_fixture *f = *state;

	assert_true(virtq_should_interrupt(&f->mem, &f->vq));
	vg_set_avail_flags(&f->mem, &f->q, VIRTQ_AVAIL_F_NO_INTERRUPT);
	assert_false(virtq_should_interrupt(&f->mem, &f->vq));
	vg_set_avail_flags(&f->mem, &f->q, 0);
	assert_true(virtq_should_interrupt(&f->mem, &f->vq));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	    T(test_empty_ring_pops_nothing),
	    T(test_pop_chain_segments),
	    T(test_push_writes_used_ring_and_wraps),
	    T(test_avail_index_wraps),
	    T(test_head_index_out_of_range),
	    T(test_next_index_out_of_range),
	    T(test_descriptor_loop),
	    T(test_descriptor_self_loop),
	    T(test_chain_of_exactly_num_is_fine),
	    T(test_buffer_outside_ram),
	    T(test_buffer_crossing_end_of_ram),
	    T(test_buffer_addr_plus_len_overflows),
	    T(test_bad_segment_late_in_chain),
	    T(test_zero_length_descriptor),
	    T(test_indirect_descriptor_refused),
	    T(test_avail_idx_jump),
	    T(test_ring_layout_checks),
	    T(test_no_interrupt_flag),
#undef T
	};

	return cmocka_run_group_tests_name("virtqueue", tests, NULL, NULL);
}
