/* SPDX-License-Identifier: MIT */
/*
 * extract-vmlinux BZIMAGE OUT: writes the uncompressed vmlinux ELF inside an
 * LZ4-compressed bzImage (for forkd-vmm's PVH entry). OUT is replaced
 * atomically: written to a temporary file beside it, fsynced, renamed.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "boot/bzimage_payload.h"
#include "util/err.h"

static int map_file(const char *path, const uint8_t **data, size_t *len, struct fk_err *err)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int ret = 0;

	if (fd < 0)
		return fk_fail_errno(err, errno, "open %s", path);
	if (fstat(fd, &st) < 0) {
		ret = fk_fail_errno(err, errno, "stat %s", path);
		goto out;
	}
	if (!S_ISREG(st.st_mode) || st.st_size == 0) {
		ret = fk_fail(err, EINVAL, "%s: not a non-empty regular file", path);
		goto out;
	}
	void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (p == MAP_FAILED) {
		ret = fk_fail_errno(err, errno, "mmap %s", path);
		goto out;
	}
	*data = p;
	*len = (size_t)st.st_size;
out:
	close(fd);
	return ret;
}

static int write_all(int fd, const uint8_t *data, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, data, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

static int write_atomically(const char *path, const uint8_t *data, size_t len, struct fk_err *err)
{
	char tmp[4096], dir_buf[4096];
	int fd = -1, dir_fd = -1, ret;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path) >= (int)sizeof(tmp))
		return fk_fail(err, ENAMETOOLONG, "output path %s too long", path);
	fd = mkstemp(tmp);
	if (fd < 0)
		return fk_fail_errno(err, errno, "create temporary file %s", tmp);
	ret = write_all(fd, data, len);
	if (ret < 0) {
		ret = fk_fail_errno(err, -ret, "write %s", tmp);
		goto fail;
	}
	if (fchmod(fd, 0644) < 0 || fsync(fd) < 0) {
		ret = fk_fail_errno(err, errno, "fsync %s", tmp);
		goto fail;
	}
	if (close(fd) < 0) {
		fd = -1;
		ret = fk_fail_errno(err, errno, "close %s", tmp);
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		ret = fk_fail_errno(err, errno, "rename %s to %s", tmp, path);
		goto fail;
	}
	/* The rename is durable only once the directory entry is. */
	snprintf(dir_buf, sizeof(dir_buf), "%s", path);
	dir_fd = open(dirname(dir_buf), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir_fd >= 0) {
		fsync(dir_fd);
		close(dir_fd);
	}
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return ret;
}

int main(int argc, char **argv)
{
	struct fk_err err = {0};
	const uint8_t *image = NULL;
	size_t image_len = 0, elf_len = 0;
	uint8_t *elf = NULL;
	int ret;

	if (argc != 3) {
		fprintf(stderr, "usage: %s BZIMAGE OUT\n", argv[0]);
		return 2;
	}
	ret = map_file(argv[1], &image, &image_len, &err);
	if (ret == 0)
		ret = fk_bzimage_extract_vmlinux(argv[1], image, image_len, FK_VMLINUX_DEFAULT_MAX,
						 &elf, &elf_len, &err);
	if (ret == 0)
		ret = write_atomically(argv[2], elf, elf_len, &err);
	if (image)
		munmap((void *)image, image_len);
	free(elf);
	if (ret < 0) {
		fprintf(stderr, "extract-vmlinux: %s\n", err.msg);
		return 1;
	}
	printf("%s: %zu bytes\n", argv[2], elf_len);
	return 0;
}
