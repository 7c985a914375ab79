/* SPDX-License-Identifier: MIT */
#include "state/diff_track.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

static uint64_t track_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int diff_abs_path(const char *path, char *out, size_t size, struct fk_err *err)
{
	char *copy = strdup(path), *dir_copy = NULL, real[PATH_MAX];
	const char *base;
	size_t n;
	int ret = 0;

	if (!copy)
		return fk_fail(err, ENOMEM, "snapshot %s: out of memory", path);
	for (n = strlen(copy); n > 1 && copy[n - 1] == '/'; n--)
		copy[n - 1] = '\0';
	dir_copy = strdup(copy);
	if (!dir_copy) {
		ret = fk_fail(err, ENOMEM, "snapshot %s: out of memory", path);
		goto out;
	}
	base = basename(copy);
	if (!realpath(dirname(dir_copy), real)) {
		ret = fk_fail_errno(err, errno, "snapshot %s: resolve its directory", path);
		goto out;
	}
	if (!strcmp(base, ".") || !strcmp(base, "..") || !strcmp(base, "/")) {
		ret = fk_fail(err, EINVAL, "snapshot path '%s': expected a directory name", path);
		goto out;
	}
	if ((size_t)snprintf(out, size, "%s/%s", strcmp(real, "/") ? real : "", base) >= size)
		ret = fk_fail(err, ENAMETOOLONG, "snapshot path '%s' is too long", path);
out:
	free(copy);
	free(dir_copy);
	return ret;
}

static int set_log_flag(struct vm *vm, bool on, struct fk_err *err)
{
	for (int i = 0; i < vm->mem.nr_regions; i++) {
		const struct guest_mem_region *r = &vm->mem.regions[i];
		struct kvm_userspace_memory_region slot = {
		    .slot = (uint32_t)i,
		    .flags = on ? KVM_MEM_LOG_DIRTY_PAGES : 0,
		    .guest_phys_addr = r->gpa,
		    .memory_size = r->size,
		    .userspace_addr = (uintptr_t)r->hva,
		};
		if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &slot) < 0)
			return fk_fail_errno(err, errno,
					     "dirty tracking: KVM_SET_USER_MEMORY_REGION slot %d "
					     "with KVM_MEM_LOG_DIRTY_PAGES",
					     i);
	}
	return 0;
}

static int arm(struct vm *vm, struct fk_err *err)
{
	struct diff_track *t = calloc(1, sizeof(*t));
	uint64_t words;
	int ret;

	if (!t)
		return fk_fail(err, ENOMEM, "dirty tracking: out of memory");
	t->nr_pages = vm->mem.total_size / SNAP_PAGE_SIZE;
	words = (t->nr_pages + 63) / 64;
	t->host_dirty = calloc(words, sizeof(uint64_t));
	t->slot_bits = calloc(words, sizeof(uint64_t));
	if (!t->host_dirty || !t->slot_bits) {
		ret = fk_fail(err, ENOMEM, "dirty tracking: out of memory for %llu pages",
			      (unsigned long long)t->nr_pages);
		free(t->host_dirty);
		free(t->slot_bits);
		free(t);
		return ret;
	}
	ret = set_log_flag(vm, true, err);
	if (ret < 0) {
		struct fk_err ignored;
		set_log_flag(vm, false, &ignored);
		free(t->host_dirty);
		free(t->slot_bits);
		free(t);
		return ret;
	}
	vm->mem.host_dirty = t->host_dirty;
	vm->diff = t;
	return 0;
}

/*
 * Reads and resets the dirty pages: KVM_GET_DIRTY_LOG (without manual
 * protect, it returns the slot's bits and clears them atomically,
 * write-protecting the pages again) ORed with the device bitmap, which is
 * swapped to zero word by word. Into `out` (nr_pages bits), or only reset
 * when out is NULL.
 */
static int collect(struct vm *vm, uint64_t *out, struct fk_err *err)
{
	struct diff_track *t = vm->diff;
	uint64_t page0 = 0, dirty = 0, t0 = track_now_us();

	for (int i = 0; i < vm->mem.nr_regions; i++) {
		const struct guest_mem_region *r = &vm->mem.regions[i];
		uint64_t pages = r->size / SNAP_PAGE_SIZE;
		struct kvm_dirty_log log = {.slot = (uint32_t)i, .dirty_bitmap = t->slot_bits};

		memset(t->slot_bits, 0, (pages + 63) / 64 * 8);
		if (ioctl(vm->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0)
			return fk_fail_errno(err, errno,
					     "dirty tracking: KVM_GET_DIRTY_LOG slot %d", i);
		page0 = (uint64_t)(r->hva - vm->mem.mapping) / SNAP_PAGE_SIZE;
		for (uint64_t p = 0; out && p < pages; p++)
			if ((t->slot_bits[p / 64] >> (p % 64)) & 1)
				out[(page0 + p) / 64] |= 1ull << ((page0 + p) % 64);
	}
	for (uint64_t w = 0; w < (t->nr_pages + 63) / 64; w++) {
		uint64_t bits = __atomic_exchange_n(&t->host_dirty[w], 0, __ATOMIC_RELAXED);

		if (out)
			out[w] |= bits;
	}
	for (uint64_t w = 0; out && w < (t->nr_pages + 63) / 64; w++)
		dirty += (uint64_t)__builtin_popcountll(out[w]);
	t->dirty_pages = dirty;
	t->collect_us = track_now_us() - t0;
	return 0;
}

int diff_track_snapshot(struct vm *vm, const char *target, const struct diff_request *req,
			struct snap_writer *w, struct fk_err *err)
{
	char target_abs[4096], parent_abs[4096];
	struct snap_diff *d = NULL;
	int ret;

	if (!req || (!req->parent && !req->track && !vm->diff))
		return 0;
	ret = diff_abs_path(target, target_abs, sizeof(target_abs), err);
	if (ret < 0)
		return ret;
	if (req->parent) {
		ret = diff_abs_path(req->parent, parent_abs, sizeof(parent_abs), err);
		if (ret < 0)
			return ret;
		if (!vm->diff)
			return fk_fail(err, EINVAL,
				       "parent %s: this VM does not track dirty pages; take a "
				       "snapshot with track_dirty first, then diffs against it",
				       req->parent);
		if (strcmp(parent_abs, vm->diff->base) != 0)
			return fk_fail(err, EINVAL,
				       "parent %s: this VM's dirty pages count from %s (its last "
				       "snapshot); a diff can only name that one",
				       req->parent, vm->diff->base);
		d = calloc(1, sizeof(*d));
		if (d) {
			d->nr_pages = vm->diff->nr_pages;
			d->pages = calloc((d->nr_pages + 63) / 64, sizeof(uint64_t));
			d->parent_dir = strdup(parent_abs);
		}
		if (!d || !d->pages || !d->parent_dir) {
			ret = fk_fail(err, ENOMEM, "dirty tracking: out of memory");
			goto fail;
		}
	}
	if (!vm->diff) {
		ret = arm(vm, err);
		if (ret < 0)
			goto fail;
	} else {
		ret = collect(vm, d ? d->pages : NULL, err);
		if (ret < 0)
			goto fail;
	}
	snprintf(vm->diff->base, sizeof(vm->diff->base), "%s", target_abs);
	if (d) {
		free(w->diff);
		w->diff = d;
	}
	return 0;
fail:
	if (d) {
		free(d->pages);
		free(d->parent_dir);
		free(d);
	}
	return ret;
}

void diff_track_free(struct vm *vm)
{
	if (!vm->diff)
		return;
	vm->mem.host_dirty = NULL;
	free(vm->diff->host_dirty);
	free(vm->diff->slot_bits);
	free(vm->diff);
	vm->diff = NULL;
}
