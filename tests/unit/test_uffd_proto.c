/* SPDX-License-Identifier: MIT */
/*
 * The userfaultfd handshake (src/uffd/uffd_proto.c) over a real socketpair:
 * a good message from the sender is received intact; every malformed one
 * (no fd, two fds, a fd that is not a userfaultfd, bad JSON, overlapping,
 * unaligned or wrapping regions, sizes that do not match the memory file, a
 * message cut short) is refused with an error naming the fault, and leaks
 * no descriptor.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "uffd/uffd_proto.h"

#define GOOD_JSON                                                                                  \
	"[{\"base_host_virt_addr\":1073741824,\"size\":3221225472,\"offset\":0,\"page_size\":"     \
	"4096},{\"base_host_virt_addr\":5368709120,\"size\":1073741824,\"offset\":3221225472,"     \
	"\"page_size\":4096}]"

/* A userfaultfd the test may create unprivileged (user-mode faults only). */
static int new_uffd(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);

	if (fd < 0)
		fail_msg("userfaultfd(UFFD_USER_MODE_ONLY): %s: this kernel must offer it",
			 strerror(errno));
	return fd;
}

static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	assert_non_null(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

/* Sends text with the given descriptors (0..2) as one message. */
static void send_raw(int sock, const char *text, size_t len, const int *fds, int nfds)
{
	char ctrl[CMSG_SPACE(sizeof(int) * 2)];
	struct iovec iov = {.iov_base = (void *)text, .iov_len = len};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};

	memset(ctrl, 0, sizeof(ctrl));
	if (nfds) {
		struct cmsghdr *c;

		msg.msg_control = ctrl;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
	}
	assert_int_equal(sendmsg(sock, &msg, 0), (ssize_t)len);
}

/* Sends text with nfds userfaultfds (or a pipe when not_uffd), expects refusal naming want. */
static void expect_refused(const char *text, int nfds, bool not_uffd, const char *want)
{
	struct uffd_region r[UFFD_MAX_REGIONS];
	struct fk_err err = {0};
	int sv[2], fds[2] = {-1, -1}, pipefd[2], uffd = 123, n = 7, before, ret;

	before = open_fds();
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	for (int i = 0; i < nfds; i++)
		fds[i] = new_uffd();
	if (not_uffd) {
		assert_int_equal(pipe(pipefd), 0);
		close(pipefd[1]);
		fds[0] = pipefd[0];
		nfds = 1;
	}
	send_raw(sv[0], text, strlen(text), fds, nfds);
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	close(sv[0]);
	ret = uffd_handshake_recv(sv[1], 1000, &uffd, r, UFFD_MAX_REGIONS, &n, &err);
	close(sv[1]);
	if (ret >= 0 || !strstr(err.msg, want))
		fail_msg("'%s' (%d fds): got %d '%s', expected an error with '%s'", text, nfds, ret,
			 err.msg, want);
	assert_int_equal(uffd, -1);
	assert_int_equal(n, 0);
	/* Every received descriptor was closed. */
	assert_int_equal(open_fds(), before);
}

static void test_good_message_round_trip(void **state)
{
	struct uffd_region out[2] = {
	    {.base_host_virt_addr = 1ULL << 30, .size = 3ULL << 30, .offset = 0, .page_size = 4096},
	    {.base_host_virt_addr = 5ULL << 30,
	     .size = 1ULL << 30,
	     .offset = 3ULL << 30,
	     .page_size = 4096}};
	struct uffd_region in[UFFD_MAX_REGIONS];
	struct fk_err err = {0};
	int sv[2], uffd = new_uffd(), got = -1, n = 0;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(uffd_handshake_send(sv[0], uffd, out, 2, &err), 0);
	assert_int_equal(uffd_handshake_recv(sv[1], 1000, &got, in, UFFD_MAX_REGIONS, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_memory_equal(in, out, sizeof(out));
	assert_true(got >= 0 && got != uffd);
	assert_int_equal(uffd_regions_match_file(in, n, 4ULL << 30, &err), 0);
	assert_int_equal(uffd_region_find(in, n, (5ULL << 30) + 4096), 1);
	assert_int_equal(uffd_region_find(in, n, (4ULL << 30) - 1), 0);
	assert_int_equal(uffd_region_find(in, n, 4ULL << 30), -1); /* between the two */
	assert_int_equal(uffd_region_find(in, n, 6ULL << 30), -1);
	close(got);
	close(uffd);
	close(sv[0]);
	close(sv[1]);
}

/* Firecracker's handler reads what its VMM wrote: the same text, byte for byte keys. */
static void test_firecracker_text_parses(void **state)
{
	struct uffd_region r[UFFD_MAX_REGIONS];
	struct fk_err err = {0};
	int n = 0;

	(void)state;
	assert_int_equal(
	    uffd_regions_parse(GOOD_JSON, strlen(GOOD_JSON), r, UFFD_MAX_REGIONS, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_int_equal(r[1].offset, 3ULL << 30);
}

/* A JSON text split over several writes (a stream socket may cut anywhere) still arrives. */
static void test_message_split_over_writes(void **state)
{
	struct uffd_region r[UFFD_MAX_REGIONS];
	struct fk_err err = {0};
	int sv[2], uffd = new_uffd(), got = -1, n = 0;
	size_t half = strlen(GOOD_JSON) / 2;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	send_raw(sv[0], GOOD_JSON, half, &uffd, 1);
	send_raw(sv[0], GOOD_JSON + half, strlen(GOOD_JSON) - half, NULL, 0);
	assert_int_equal(uffd_handshake_recv(sv[1], 1000, &got, r, UFFD_MAX_REGIONS, &n, &err), 0);
	assert_int_equal(n, 2);
	close(got);
	close(uffd);
	close(sv[0]);
	close(sv[1]);
}

static void test_descriptor_faults(void **state)
{
	(void)state;
	expect_refused(GOOD_JSON, 0, false, "0 file descriptors: expected exactly one");
	expect_refused(GOOD_JSON, 2, false, "2 file descriptors: expected exactly one");
	expect_refused(GOOD_JSON, 0, true, "not a userfaultfd");
}

static void test_bad_json(void **state)
{
	(void)state;
	expect_refused("[{\"size\":4096,]", 1, false, "bad JSON");
	expect_refused("hello", 1, false, "bad JSON");
	expect_refused("{\"base_host_virt_addr\":0}", 1, false, "expected a JSON array");
	expect_refused("[]", 1, false, "0 regions: expected 1 to");
	expect_refused("[1]", 1, false, "region 0: expected an object");
	expect_refused("[{\"base_host_virt_addr\":4096,\"size\":4096,\"offset\":0}]", 1, false,
		       "region 0: missing 'page_size'");
	expect_refused("[{\"base_host_virt_addr\":4096,\"size\":4096,\"offset\":0,\"page_size\":"
		       "4096,\"extra\":1}]",
		       1, false, "unknown key 'extra'");
	expect_refused("[{\"base_host_virt_addr\":-4096,\"size\":4096,\"offset\":0,\"page_size\":"
		       "4096}]",
		       1, false, "'base_host_virt_addr': expected a non-negative integer");
	expect_refused("[{\"base_host_virt_addr\":4096,\"size\":\"4096\",\"offset\":0,"
		       "\"page_size\":4096}]",
		       1, false, "'size': expected a non-negative integer");
	expect_refused("[{\"base_host_virt_addr\":4096,\"size\":4096,\"size\":8192,\"offset\":0,"
		       "\"page_size\":4096}]",
		       1, false, "bad JSON");
}

static void test_bad_regions(void **state)
{
	(void)state;
	expect_refused("[{\"base_host_virt_addr\":4097,\"size\":4096,\"offset\":0,\"page_size\":"
		       "4096}]",
		       1, false, "must be multiples of its page_size");
	expect_refused("[{\"base_host_virt_addr\":4096,\"size\":100,\"offset\":0,\"page_size\":"
		       "4096}]",
		       1, false, "must be multiples of its page_size");
	expect_refused("[{\"base_host_virt_addr\":4096,\"size\":4096,\"offset\":0,\"page_size\":"
		       "3000}]",
		       1, false, "page_size 3000");
	expect_refused("[{\"base_host_virt_addr\":4096,\"size\":0,\"offset\":0,\"page_size\":"
		       "4096}]",
		       1, false, "size 0");
	expect_refused("[{\"base_host_virt_addr\":9223372036854771712,\"size\":9223372036854771712,"
		       "\"offset\":0,\"page_size\":4096},{\"base_host_virt_addr\":"
		       "9223372036854771712,\"size\":9223372036854771712,\"offset\":"
		       "9223372036854771712,\"page_size\":4096}]",
		       1, false, "overlap in the VMM's address space");
	expect_refused("[{\"base_host_virt_addr\":0,\"size\":8192,\"offset\":0,\"page_size\":4096},"
		       "{\"base_host_virt_addr\":4096,\"size\":4096,\"offset\":8192,\"page_size\":"
		       "4096}]",
		       1, false, "overlap in the VMM's address space");
	expect_refused("[{\"base_host_virt_addr\":0,\"size\":8192,\"offset\":0,\"page_size\":4096},"
		       "{\"base_host_virt_addr\":65536,\"size\":4096,\"offset\":4096,\"page_size\":"
		       "4096}]",
		       1, false, "overlap in the memory file");
}

/* A wrap past 2^64 cannot come from JSON's signed integers, so check the function directly. */
static void test_wrapping_region(void **state)
{
	struct uffd_region r = {.base_host_virt_addr = 0xFFFFFFFFFFFFF000ULL,
				.size = 8192,
				.offset = 0,
				.page_size = 4096};
	struct fk_err err = {0};
	char *text = NULL;

	(void)state;
	assert_int_equal(uffd_regions_format(&r, 1, &text, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "wraps around"));
	assert_null(text);
}

static void test_sizes_against_the_file(void **state)
{
	struct uffd_region r[2] = {
	    {.base_host_virt_addr = 1ULL << 30, .size = 8192, .offset = 0, .page_size = 4096},
	    {.base_host_virt_addr = 2ULL << 30, .size = 4096, .offset = 8192, .page_size = 4096}};
	struct fk_err err = {0};

	(void)state;
	assert_int_equal(uffd_regions_match_file(r, 2, 12288, &err), 0);
	/* A memory file shorter than the regions. */
	assert_int_equal(uffd_regions_match_file(r, 2, 8192, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "region 1 (offset 8192, size 4096) ends past the memory "
					"file's 8192 bytes"));
	/* Longer: the regions do not cover it. */
	assert_int_equal(uffd_regions_match_file(r, 2, 16384, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "sizes do not match"));
}

static void test_peer_closes_or_stalls(void **state)
{
	struct uffd_region r[UFFD_MAX_REGIONS];
	struct fk_err err = {0};
	int sv[2], uffd = new_uffd(), got = 5, n = 3;

	(void)state;
	/* Half a message, then silence: a timeout that says so. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	send_raw(sv[0], GOOD_JSON, 20, &uffd, 1);
	assert_int_equal(uffd_handshake_recv(sv[1], 200, &got, r, UFFD_MAX_REGIONS, &n, &err),
			 -ETIMEDOUT);
	assert_non_null(strstr(err.msg, "cut short (20 bytes"));
	assert_int_equal(got, -1);
	/* Half a message, then the peer closes. */
	close(sv[1]);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv + 0), 0);
	send_raw(sv[0], GOOD_JSON, 20, &uffd, 1);
	close(sv[0]);
	assert_int_equal(uffd_handshake_recv(sv[1], 1000, &got, r, UFFD_MAX_REGIONS, &n, &err),
			 -EPIPE);
	assert_non_null(strstr(err.msg, "closed the connection after 20 bytes"));
	close(sv[1]);
	close(uffd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good_message_round_trip),
	    cmocka_unit_test(test_firecracker_text_parses),
	    cmocka_unit_test(test_message_split_over_writes),
	    cmocka_unit_test(test_descriptor_faults),
	    cmocka_unit_test(test_bad_json),
	    cmocka_unit_test(test_bad_regions),
	    cmocka_unit_test(test_wrapping_region),
	    cmocka_unit_test(test_sizes_against_the_file),
	    cmocka_unit_test(test_peer_closes_or_stalls),
	};
	return cmocka_run_group_tests_name("uffd handshake", tests, NULL, NULL);
}
