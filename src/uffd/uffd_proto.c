/* SPDX-License-Identifier: MIT */
#include "uffd/uffd_proto.h"

#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *const region_keys[] = {"base_host_virt_addr", "size", "offset", "page_size"};
#define NR_KEYS (sizeof(region_keys) / sizeof(region_keys[0]))

static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

/* The checks every region list must pass, whichever side built it. */
static int check_regions(const struct uffd_region *r, int n, struct fk_err *err)
{
	for (int i = 0; i < n; i++) {
		uint64_t ps = r[i].page_size;

		if (ps < UFFD_MIN_PAGE_SIZE || ps > UFFD_MAX_PAGE_SIZE || (ps & (ps - 1)))
			return fk_fail(err, EINVAL,
				       "region %d: page_size %llu: expected a power of two from "
				       "4096 to 1 GiB",
				       i, (unsigned long long)ps);
		if (r[i].size == 0)
			return fk_fail(err, EINVAL, "region %d: size 0: expected a positive size",
				       i);
		if (r[i].base_host_virt_addr % ps || r[i].size % ps || r[i].offset % ps)
			return fk_fail(
			    err, EINVAL,
			    "region %d: base_host_virt_addr 0x%llx, size %llu and offset "
			    "%llu must be multiples of its page_size %llu",
			    i, (unsigned long long)r[i].base_host_virt_addr,
			    (unsigned long long)r[i].size, (unsigned long long)r[i].offset,
			    (unsigned long long)ps);
		if (r[i].base_host_virt_addr + r[i].size < r[i].base_host_virt_addr ||
		    r[i].offset + r[i].size < r[i].offset)
			return fk_fail(err, EINVAL,
				       "region %d: base_host_virt_addr or offset plus size %llu "
				       "wraps around",
				       i, (unsigned long long)r[i].size);
		for (int j = 0; j < i; j++) {
			if (ranges_overlap(r[i].base_host_virt_addr, r[i].size,
					   r[j].base_host_virt_addr, r[j].size))
				return fk_fail(err, EINVAL,
					       "regions %d and %d overlap in the VMM's address "
					       "space (0x%llx and 0x%llx)",
					       j, i, (unsigned long long)r[j].base_host_virt_addr,
					       (unsigned long long)r[i].base_host_virt_addr);
			if (ranges_overlap(r[i].offset, r[i].size, r[j].offset, r[j].size))
				return fk_fail(err, EINVAL,
					       "regions %d and %d overlap in the memory file "
					       "(offsets %llu and %llu)",
					       j, i, (unsigned long long)r[j].offset,
					       (unsigned long long)r[i].offset);
		}
	}
	return 0;
}

int uffd_regions_format(const struct uffd_region *regions, int n, char **out, struct fk_err *err)
{
	json_t *arr;
	int ret;

	*out = NULL;
	if (n < 1 || n > UFFD_MAX_REGIONS)
		return fk_fail(err, EINVAL, "%d regions: expected 1 to %d", n, UFFD_MAX_REGIONS);
	ret = check_regions(regions, n, err);
	if (ret < 0)
		return ret;
	arr = json_array();
	for (int i = 0; arr && i < n; i++) {
		/* json_int_t is signed 64-bit: user-space addresses and sizes fit. */
		json_t *o = json_pack(
		    "{sIsIsIsI}", "base_host_virt_addr", (json_int_t)regions[i].base_host_virt_addr,
		    "size", (json_int_t)regions[i].size, "offset", (json_int_t)regions[i].offset,
		    "page_size", (json_int_t)regions[i].page_size);
		if (!o || json_array_append_new(arr, o) < 0) {
			json_decref(arr);
			arr = NULL;
		}
	}
	if (arr)
		*out = json_dumps(arr, JSON_COMPACT);
	json_decref(arr);
	if (!*out)
		return fk_fail(err, ENOMEM, "uffd handshake: out of memory");
	return 0;
}

static int parse_region(json_t *o, int i, struct uffd_region *r, struct fk_err *err)
{
	uint64_t *fields[NR_KEYS] = {&r->base_host_virt_addr, &r->size, &r->offset, &r->page_size};
	const char *key;
	json_t *v;

	if (!json_is_object(o))
		return fk_fail(err, EINVAL, "region %d: expected an object", i);
	json_object_foreach(o, key, v)
	{
		size_t k;

		for (k = 0; k < NR_KEYS && strcmp(key, region_keys[k]); k++)
			;
		if (k == NR_KEYS)
			return fk_fail(err, EINVAL,
				       "region %d: unknown key '%.64s' (expected "
				       "base_host_virt_addr, size, offset, page_size)",
				       i, key);
	}
	for (size_t k = 0; k < NR_KEYS; k++) {
		v = json_object_get(o, region_keys[k]);
		if (!v)
			return fk_fail(err, EINVAL, "region %d: missing '%s'", i, region_keys[k]);
		if (!json_is_integer(v) || json_integer_value(v) < 0)
			return fk_fail(err, EINVAL,
				       "region %d: '%s': expected a non-negative integer", i,
				       region_keys[k]);
		*fields[k] = (uint64_t)json_integer_value(v);
	}
	return 0;
}

int uffd_regions_parse(const char *text, size_t len, struct uffd_region *regions, int max,
		       int *n_out, struct fk_err *err)
{
	json_error_t jerr;
	json_t *arr;
	size_t n;
	int ret = 0;

	*n_out = 0;
	arr = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!arr)
		return fk_fail(err, EINVAL, "bad JSON at byte %d: %s", jerr.position, jerr.text);
	if (!json_is_array(arr)) {
		ret = fk_fail(err, EINVAL, "expected a JSON array of regions");
		goto out;
	}
	n = json_array_size(arr);
	if (n < 1 || n > (size_t)max) {
		ret = fk_fail(err, EINVAL, "%zu regions: expected 1 to %d", n, max);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		ret = parse_region(json_array_get(arr, i), (int)i, &regions[i], err);
		if (ret < 0)
			goto out;
	}
	ret = check_regions(regions, (int)n, err);
	if (!ret)
		*n_out = (int)n;
out:
	json_decref(arr);
	return ret;
}

int uffd_regions_match_file(const struct uffd_region *regions, int n, uint64_t file_size,
			    struct fk_err *err)
{
	uint64_t total = 0;

	for (int i = 0; i < n; i++) {
		if (regions[i].offset + regions[i].size > file_size)
			return fk_fail(err, EINVAL,
				       "region %d (offset %llu, size %llu) ends past the memory "
				       "file's %llu bytes",
				       i, (unsigned long long)regions[i].offset,
				       (unsigned long long)regions[i].size,
				       (unsigned long long)file_size);
		total += regions[i].size;
	}
	/* No overlaps (checked at parse) and nothing past the end: equal sums mean a tiling. */
	if (total != file_size)
		return fk_fail(err, EINVAL,
			       "the regions hold %llu bytes but the memory file has %llu: sizes "
			       "do not match",
			       (unsigned long long)total, (unsigned long long)file_size);
	return 0;
}

int uffd_handshake_send(int sock, int uffd, const struct uffd_region *regions, int n,
			struct fk_err *err)
{
	char ctrl[CMSG_SPACE(sizeof(int))];
	struct msghdr msg = {0};
	struct cmsghdr *c;
	struct iovec iov;
	char *text;
	size_t len;
	ssize_t sent;
	int ret;

	ret = uffd_regions_format(regions, n, &text, err);
	if (ret < 0)
		return ret;
	len = strlen(text);
	memset(ctrl, 0, sizeof(ctrl));
	iov = (struct iovec){.iov_base = text, .iov_len = len};
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = ctrl;
	msg.msg_controllen = sizeof(ctrl);
	c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &uffd, sizeof(int));
	do
		sent = sendmsg(sock, &msg, MSG_NOSIGNAL);
	while (sent < 0 && errno == EINTR);
	if (sent < 0)
		ret = fk_fail_errno(err, errno, "uffd handshake: send");
	else if ((size_t)sent != len)
		/* The fd went with the first byte; a short stream write of the rest is done here.
		 */
		ret = send(sock, text + sent, len - (size_t)sent, MSG_NOSIGNAL) ==
			      (ssize_t)(len - (size_t)sent)
			  ? 0
			  : fk_fail(err, EIO, "uffd handshake: short send");
	free(text);
	return ret;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Takes the descriptors out of a received message: counts them into *nfds, keeps the first. */
static void take_fds(struct msghdr *msg, int *first, int *nfds)
{
	for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
		size_t count;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < count; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (*first < 0)
				*first = fd;
			else
				close(fd);
			(*nfds)++;
		}
	}
}

/* Whether fd is a userfaultfd: its /proc link names the anon inode. */
static bool is_userfaultfd(int fd)
{
	char path[64], target[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return false;
	target[n] = '\0';
	return strcmp(target, "anon_inode:[userfaultfd]") == 0;
}

int uffd_handshake_recv(int sock, int timeout_ms, int *uffd_out, struct uffd_region *regions,
			int max, int *n_out, struct fk_err *err)
{
	/* Room for several descriptors, so that two are seen (and refused), not truncated. */
	char ctrl[CMSG_SPACE(sizeof(int) * 8)];
	char *buf = malloc(UFFD_MAX_MSG + 1);
	size_t len = 0;
	int fd = -1, nfds = 0, ret;
	long long deadline = now_ms() + timeout_ms;

	*uffd_out = -1;
	*n_out = 0;
	if (!buf)
		return fk_fail(err, ENOMEM, "uffd handshake: out of memory");
	for (;;) {
		struct iovec iov = {.iov_base = buf + len, .iov_len = UFFD_MAX_MSG - len};
		struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
		struct pollfd pfd = {.fd = sock, .events = POLLIN};
		json_error_t jerr;
		json_t *probe;
		ssize_t got;
		long long left = deadline - now_ms();

		if (left <= 0) {
			if (len)
				ret = fk_fail(err, ETIMEDOUT,
					      "uffd handshake: the message was cut short (%zu "
					      "bytes, no complete JSON after %d ms)",
					      len, timeout_ms);
			else
				ret = fk_fail(err, ETIMEDOUT,
					      "uffd handshake: nothing received in %d ms",
					      timeout_ms);
			goto out;
		}
		if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR) {
			ret = fk_fail_errno(err, errno, "uffd handshake: poll");
			goto out;
		}
		if (!(pfd.revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		msg.msg_control = ctrl;
		msg.msg_controllen = sizeof(ctrl);
		got = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
		if (got < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			ret = fk_fail_errno(err, errno, "uffd handshake: receive");
			goto out;
		}
		take_fds(&msg, &fd, &nfds);
		if (msg.msg_flags & MSG_CTRUNC) {
			ret = fk_fail(err, EINVAL,
				      "uffd handshake: too many descriptors (control data cut)");
			goto out;
		}
		if (got == 0) {
			ret = fk_fail(err, EPIPE,
				      "uffd handshake: the peer closed the connection after %zu "
				      "bytes, without a complete message",
				      len);
			goto out;
		}
		len += (size_t)got;
		/* Parse only once the text is complete; a cut at any byte waits for more. */
		probe = json_loadb(buf, len, 0, &jerr);
		if (probe) {
			json_decref(probe);
			break;
		}
		if (json_error_code(&jerr) != json_error_premature_end_of_input)
			break; /* Malformed: uffd_regions_parse says how. */
		if (len == UFFD_MAX_MSG) {
			ret = fk_fail(err, EMSGSIZE, "uffd handshake: message longer than %d bytes",
				      UFFD_MAX_MSG);
			goto out;
		}
	}
	if (nfds != 1) {
		ret = fk_fail(err, EINVAL,
			      "uffd handshake: %d file descriptors: expected exactly one "
			      "(the userfaultfd, as SCM_RIGHTS)",
			      nfds);
		goto out;
	}
	if (!is_userfaultfd(fd)) {
		ret = fk_fail(err, EINVAL,
			      "uffd handshake: the descriptor received is not a userfaultfd");
		goto out;
	}
	ret = uffd_regions_parse(buf, len, regions, max, n_out, err);
	if (ret < 0) {
		fk_wrap(err, "uffd handshake");
		goto out;
	}
	*uffd_out = fd;
	fd = -1;
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	return ret;
}

int uffd_region_find(const struct uffd_region *regions, int n, uint64_t addr)
{
	for (int i = 0; i < n; i++)
		if (addr >= regions[i].base_host_virt_addr &&
		    addr - regions[i].base_host_virt_addr < regions[i].size)
			return i;
	return -1;
}
