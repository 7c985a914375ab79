/* SPDX-License-Identifier: MIT */
#include "state/snapshot_diff.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static uint64_t diff_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void snap_chain_close(struct snap_chain *c)
{
	if (!c)
		return;
	for (int i = 0; i < c->n; i++) {
		snap_reader_close(c->r[i]);
		free(c->dir[i]);
	}
	free(c);
}

int snap_chain_base_fd(const struct snap_chain *c)
{
	return snap_reader_memory_fd(c->r[c->n - 1]);
}

/* Appends link dir (opened as r) to the chain; takes r. */
static int chain_push(struct snap_chain *c, const char *dir, struct snap_reader *r,
		      struct fk_err *err)
{
	c->dir[c->n] = strdup(dir);
	c->r[c->n] = r;
	c->n++;
	if (!c->dir[c->n - 1])
		return fk_fail(err, ENOMEM, "snapshot %s: out of memory", dir);
	return 0;
}

int snap_chain_open(const char *dir, struct snap_chain **out, struct fk_err *err)
{
	struct snap_chain *c = calloc(1, sizeof(*c));
	struct stat seen[SNAP_DIFF_MAX_DEPTH + 1];
	struct snap_parent_info pi;
	struct snap_reader *r = NULL;
	int rc;

	*out = NULL;
	if (!c)
		return fk_fail(err, ENOMEM, "snapshot %s: out of memory", dir);
	rc = snap_reader_open(dir, &r, err);
	if (rc)
		goto fail;
	if (stat(dir, &seen[0]) < 0) {
		rc = fk_fail_errno(err, errno, "snapshot %s", dir);
		snap_reader_close(r);
		goto fail;
	}
	rc = chain_push(c, dir, r, err);
	if (rc)
		goto fail;
	while (snap_reader_parent(c->r[c->n - 1], &pi) == 0) {
		const char *child = c->dir[c->n - 1];
		struct stat st;

		if (c->n > SNAP_DIFF_MAX_DEPTH) {
			rc = fk_fail(err, ELOOP,
				     "snapshot %s: chain too deep: %s is the %d-th diff and still "
				     "names a parent (at most %d)",
				     dir, child, c->n, SNAP_DIFF_MAX_DEPTH);
			goto fail;
		}
		if (stat(pi.path, &st) < 0) {
			rc = fk_fail_errno(err, errno,
					   "snapshot %s: parent %s of %s is missing (a diff needs "
					   "every snapshot of its chain)",
					   dir, pi.path, child);
			goto fail;
		}
		for (int i = 0; i < c->n; i++)
			if (seen[i].st_dev == st.st_dev && seen[i].st_ino == st.st_ino) {
				rc = fk_fail(err, ELOOP,
					     "snapshot %s: parent %s of %s is already in the chain "
					     "(%s): a cycle",
					     dir, pi.path, child, c->dir[i]);
				goto fail;
			}
		seen[c->n] = st;
		rc = snap_reader_open(pi.path, &r, err);
		if (rc) {
			fk_wrap(err, "snapshot %s: parent of %s", dir, child);
			goto fail;
		}
		if (snap_reader_identity(r) != pi.identity) {
			rc = fk_fail(err, ESTALE,
				     "snapshot %s: parent %s/state changed after %s was written "
				     "(identity %016llx recorded, %016llx now): the diff no longer "
				     "applies",
				     dir, pi.path, child, (unsigned long long)pi.identity,
				     (unsigned long long)snap_reader_identity(r));
			snap_reader_close(r);
			goto fail;
		}
		if (snap_reader_vm_info(r)->mem_size != pi.mem_size) {
			rc = fk_fail(err, EINVAL,
				     "snapshot %s: parent %s has %llu MiB of memory, %s %llu MiB",
				     dir, pi.path,
				     (unsigned long long)(snap_reader_vm_info(r)->mem_size >> 20),
				     child, (unsigned long long)(pi.mem_size >> 20));
			snap_reader_close(r);
			goto fail;
		}
		rc = chain_push(c, pi.path, r, err);
		if (rc)
			goto fail;
	}
	*out = c;
	return 0;
fail:
	snap_chain_close(c);
	return rc < 0 ? rc : -EINVAL;
}

static int pread_full(int fd, uint8_t *dst, uint64_t len, uint64_t off, const char *path,
		      struct fk_err *err)
{
	while (len) {
		ssize_t n = pread(fd, dst, len > (1u << 30) ? (1u << 30) : (size_t)len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return fk_fail_errno(err, errno, "memory file %s: read at %llu", path,
					     (unsigned long long)off);
		if (n == 0)
			return fk_fail(err, EIO, "memory file %s: ends before offset %llu", path,
				       (unsigned long long)off);
		dst += n;
		off += (uint64_t)n;
		len -= (uint64_t)n;
	}
	return 0;
}

int snap_chain_overlay(const struct snap_chain *c, uint8_t *map, uint64_t size, uint64_t *bytes,
		       struct fk_err *err)
{
	uint64_t total = 0;

	for (int i = c->n - 2; i >= 0; i--) {
		const struct snap_reader *r = c->r[i];
		const uint8_t *bits;
		uint64_t nr, present, p = 0;
		int fd = snap_reader_memory_fd(r), rc;

		if (snap_reader_page_map(r, &bits, &nr, &present) < 0)
			return fk_fail(err, EINVAL, "snapshot %s: a diff without a page map",
				       c->dir[i]);
		if (nr * SNAP_PAGE_SIZE != size)
			return fk_fail(err, EINVAL,
				       "snapshot %s: page map covers %llu bytes, memory is %llu",
				       c->dir[i], (unsigned long long)(nr * SNAP_PAGE_SIZE),
				       (unsigned long long)size);
		while (p < nr) {
			uint64_t start;

			/* Whole empty bytes at once: most of an idle guest's map is zero. */
			while (p < nr && (p % 8 == 0 && bits[p / 8] == 0))
				p += 8;
			while (p < nr && !snap_page_map_test(bits, p))
				p++;
			start = p;
			while (p < nr && snap_page_map_test(bits, p))
				p++;
			if (p > start) {
				rc = pread_full(
				    fd, map + start * SNAP_PAGE_SIZE, (p - start) * SNAP_PAGE_SIZE,
				    start * SNAP_PAGE_SIZE, snap_reader_memory_path(r), err);
				if (rc)
					return fk_wrap(err, "snapshot %s", c->dir[i]);
				total += (p - start) * SNAP_PAGE_SIZE;
			}
		}
	}
	if (bytes)
		*bytes = total;
	return 0;
}

/* Every extra file of the newest link (its disk copies) goes into the compacted one. */
static int add_extra_files(struct snap_writer *w, const char *dir, int *fds, int *nfds,
			   struct fk_err *err)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int rc = 0;

	if (!d)
		return fk_fail_errno(err, errno, "snapshot %s: list files", dir);
	while (!rc && (e = readdir(d))) {
		struct stat st;
		int fd;

		if (e->d_name[0] == '.' || !strcmp(e->d_name, SNAP_STATE_FILE) ||
		    !strcmp(e->d_name, SNAP_MEMORY_FILE) || !strcmp(e->d_name, SNAP_WRITER_FILE))
			continue;
		if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode))
			continue;
		if (*nfds == SNAP_MAX_FILES) {
			rc = fk_fail(err, E2BIG, "snapshot %s: more than %d extra files", dir,
				     SNAP_MAX_FILES);
			break;
		}
		fd = openat(dirfd(d), e->d_name, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			rc = fk_fail_errno(err, errno, "snapshot %s/%s: open", dir, e->d_name);
			break;
		}
		fds[(*nfds)++] = fd;
		rc = snap_writer_add_file(w, e->d_name, fd, err);
	}
	closedir(d);
	return rc;
}

int snap_chain_compact(const char *dir, const char *out, struct snap_compact_stats *st,
		       struct fk_err *err)
{
	struct snap_mem_region regions[8];
	struct snap_memory_source mem = {.regions = regions};
	const struct snap_vm_info *info;
	struct snap_chain *c = NULL;
	struct snap_writer w;
	int fds[SNAP_MAX_FILES], nfds = 0, rc;
	uint8_t *map = MAP_FAILED;
	uint64_t t0 = diff_now_us();

	memset(st, 0, sizeof(*st));
	snap_writer_init(&w, 0);
	rc = snap_chain_open(dir, &c, err);
	if (rc)
		goto out;
	st->links = c->n;
	info = snap_reader_vm_info(c->r[0]);
	if (info->nr_regions > 8) {
		rc = fk_fail(err, EINVAL, "snapshot %s: %u memory regions, at most 8", dir,
			     info->nr_regions);
		goto out;
	}
	snap_writer_init(&w, info->nr_vcpus);
	/* The base copy-on-write: the diffs' pages land in private copies, the file stays. */
	map = mmap(NULL, info->mem_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE,
		   snap_chain_base_fd(c), 0);
	if (map == MAP_FAILED) {
		rc = fk_fail_errno(err, errno, "snapshot %s: map the base's memory file %s", dir,
				   snap_reader_memory_path(c->r[c->n - 1]));
		goto out;
	}
	rc = snap_chain_overlay(c, map, info->mem_size, &st->overlay_bytes, err);
	if (rc)
		goto out;
	for (uint32_t i = 0; i < snap_reader_nr_sections(c->r[0]); i++) {
		uint32_t type, instance;
		const void *data;
		size_t len;

		snap_reader_section(c->r[0], i, &type, &instance, &data, &len);
		if (type == SNAP_SEC_VM_INFO || type == SNAP_SEC_MEM_HASHES ||
		    type == SNAP_SEC_PARENT || type == SNAP_SEC_PAGE_MAP)
			continue; /* commit writes these from the memory */
		rc = snap_writer_add(&w, type, instance, data, len, err);
		if (rc)
			goto out;
	}
	rc = add_extra_files(&w, dir, fds, &nfds, err);
	if (rc)
		goto out;
	for (uint32_t i = 0; i < info->nr_regions; i++)
		regions[i] = (struct snap_mem_region){.gpa = info->regions[i].gpa,
						      .size = info->regions[i].size,
						      .host = map + info->regions[i].file_offset};
	mem.nr_regions = info->nr_regions;
	rc = snap_writer_commit(&w, out, &mem, err);
	st->data_bytes = w.stats.data_bytes;
out:
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	if (map != MAP_FAILED)
		munmap(map, info->mem_size);
	snap_writer_free(&w);
	snap_chain_close(c);
	st->us = diff_now_us() - t0;
	if (rc && !strstr(err->msg, out))
		fk_wrap(err, "compact %s into %s", dir, out);
	return rc;
}
