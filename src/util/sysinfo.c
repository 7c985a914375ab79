/* SPDX-License-Identifier: MIT */
#include "util/sysinfo.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int fk_sysfs_selected(const char *text, char *out, size_t size)
{
	const char *open = strchr(text, '['), *close;
	size_t len;

	if (!open)
		return -EINVAL;
	close = strchr(open + 1, ']');
	if (!close || close == open + 1 || strchr(close + 1, '['))
		return -EINVAL;
	len = (size_t)(close - open - 1);
	for (size_t i = 0; i < len; i++)
		if (isspace((unsigned char)open[1 + i]) || open[1 + i] == '[')
			return -EINVAL;
	if (len >= size)
		return -ENAMETOOLONG;
	memcpy(out, open + 1, len);
	out[len] = '\0';
	return 0;
}

int fk_split_words(const char *text, json_t *array)
{
	int n = 0;

	while (*text) {
		size_t len;

		while (isspace((unsigned char)*text))
			text++;
		for (len = 0; text[len] && !isspace((unsigned char)text[len]); len++)
			;
		if (!len)
			break;
		if (json_array_append_new(array, json_stringn(text, len)) < 0)
			return -ENOMEM;
		n++;
		text += len;
	}
	return n;
}

/* Bit i of UFFDIO_API's features (include/uapi/linux/userfaultfd.h, up to
 * Linux 6.8); spelled out because the installed headers may be older. */
static const char *const uffd_features[] = {
    "PAGEFAULT_FLAG_WP",
    "EVENT_FORK",
    "EVENT_REMAP",
    "EVENT_REMOVE",
    "MISSING_HUGETLBFS",
    "MISSING_SHMEM",
    "EVENT_UNMAP",
    "SIGBUS",
    "THREAD_ID",
    "MINOR_HUGETLBFS",
    "MINOR_SHMEM",
    "EXACT_ADDRESS",
    "WP_HUGETLBFS_SHMEM",
    "WP_UNPOPULATED",
    "POISON",
    "WP_ASYNC",
    "MOVE",
};

int fk_uffd_feature_names(uint64_t features, json_t *array)
{
	for (unsigned i = 0; i < 64; i++) {
		char name[16];
		json_t *s;

		if (!(features & (1ULL << i)))
			continue;
		if (i < sizeof(uffd_features) / sizeof(uffd_features[0])) {
			s = json_string(uffd_features[i]);
		} else {
			snprintf(name, sizeof(name), "bit %u", i);
			s = json_string(name);
		}
		if (json_array_append_new(array, s) < 0)
			return -ENOMEM;
	}
	return 0;
}

const char *fk_errno_name(int e, char *buf, size_t size)
{
	const char *name = strerrorname_np(e);

	if (name)
		return name;
	snprintf(buf, size, "errno %d", e);
	return buf;
}

int fk_read_small_file(const char *path, char *buf, size_t size)
{
	ssize_t n;
	size_t got = 0;
	int fd, ret = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	while (got < size - 1) {
		n = read(fd, buf + got, size - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			goto cleanup;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	buf[got] = '\0';
	ret = (int)got;
cleanup:
	close(fd);
	return ret;
}
