/* SPDX-License-Identifier: MIT */
/* The agent protocol's frame codec (src/agent/agent_proto.c): headers, the incremental reader,
 * writes. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "forkd/agent_proto.h"

static void make_hdr(uint8_t out[FK_AGENT_HDR_LEN], unsigned magic, unsigned version, unsigned type,
		     uint32_t len)
{
	fk_frame_hdr_encode(out, type, len);
	out[0] = magic & 0xff;
	out[1] = magic >> 8;
	out[2] = (uint8_t)version;
}

static void expect_decode(unsigned magic, unsigned version, unsigned type, uint32_t len, int ret)
{
	uint8_t raw[FK_AGENT_HDR_LEN];
	struct fk_frame_hdr hdr;
	char why[160] = "";

	make_hdr(raw, magic, version, type, len);
	assert_int_equal(fk_frame_hdr_decode(raw, &hdr, why, sizeof(why)), ret);
	if (ret < 0) {
		assert_true(strlen(why) > 0);
	} else {
		assert_int_equal(hdr.type, type);
		assert_int_equal(hdr.len, len);
		assert_int_equal(hdr.version, FK_AGENT_VERSION);
	}
}

static void test_header_round_trip(void **state)
{
	(void)state;
	uint8_t raw[FK_AGENT_HDR_LEN];

	fk_frame_hdr_encode(raw, FK_FRAME_STDOUT, 0x01020304);
	assert_memory_equal(raw, "FK\x01\x06\x04\x03\x02\x01", FK_AGENT_HDR_LEN);
	expect_decode(FK_AGENT_MAGIC, FK_AGENT_VERSION, FK_FRAME_DATA, FK_AGENT_MAX_PAYLOAD, 0);
	expect_decode(FK_AGENT_MAGIC, FK_AGENT_VERSION, FK_FRAME_REQUEST, FK_AGENT_MAX_JSON, 0);
	expect_decode(FK_AGENT_MAGIC, FK_AGENT_VERSION, FK_FRAME_DATA_EOF, 0, 0);
	expect_decode(FK_AGENT_MAGIC, FK_AGENT_VERSION, FK_FRAME_STDIN, 0, 0);
}

static void test_header_errors(void **state)
{
	(void)state;
	expect_decode(0x4b47, FK_AGENT_VERSION, FK_FRAME_REQUEST, 2, -EPROTO);
	expect_decode(0x464b, FK_AGENT_VERSION, FK_FRAME_REQUEST, 2, -EPROTO); /* "KF" */
	expect_decode(FK_AGENT_MAGIC, 0, FK_FRAME_REQUEST, 2, -EPROTONOSUPPORT);
	expect_decode(FK_AGENT_MAGIC, 2, FK_FRAME_REQUEST, 2, -EPROTONOSUPPORT);
	expect_decode(FK_AGENT_MAGIC, FK_AGENT_VERSION, 0, 0, -EBADMSG);
	expect_decode(FK_AGENT_MAGIC, FK_AGENT_VERSION, FK_FRAME_TYPE_MAX + 1, 0, -EBADMSG);
	expect_decode(FK_AGENT_MAGIC, FK_AGENT_VERSION, 255, 0, -EBADMSG);
	expect_decode(FK_AGENT_MAGIC, FK_AGENT_VERSION, FK_FRAME_STDIN_EOF, 1, -EBADMSG);
	expect_decode(FK_AGENT_MAGIC, FK_AGENT_VERSION, FK_FRAME_DATA_EOF, 7, -EBADMSG);
	expect_decode(FK_AGENT_MAGIC, FK_AGENT_VERSION, FK_FRAME_DATA, FK_AGENT_MAX_PAYLOAD + 1,
		      -EMSGSIZE);
	expect_decode(FK_AGENT_MAGIC, FK_AGENT_VERSION, FK_FRAME_STDOUT, UINT32_MAX, -EMSGSIZE);
	expect_decode(FK_AGENT_MAGIC, FK_AGENT_VERSION, FK_FRAME_REQUEST, FK_AGENT_MAX_JSON + 1,
		      -EMSGSIZE);
	expect_decode(FK_AGENT_MAGIC, FK_AGENT_VERSION, FK_FRAME_EXIT, FK_AGENT_MAX_PAYLOAD,
		      -EMSGSIZE);

	/* A NULL reason buffer is allowed. */
	uint8_t raw[FK_AGENT_HDR_LEN];
	struct fk_frame_hdr hdr;
	make_hdr(raw, 0, FK_AGENT_VERSION, FK_FRAME_REQUEST, 0);
	assert_int_equal(fk_frame_hdr_decode(raw, &hdr, NULL, 0), -EPROTO);
}

static void test_type_names(void **state)
{
	(void)state;
	assert_string_equal(fk_frame_type_name(FK_FRAME_REQUEST), "REQUEST");
	assert_string_equal(fk_frame_type_name(FK_FRAME_STDIN_EOF), "STDIN_EOF");
	assert_string_equal(fk_frame_type_name(FK_FRAME_DATA_EOF), "DATA_EOF");
	assert_string_equal(fk_frame_type_name(0), "unknown");
	assert_string_equal(fk_frame_type_name(FK_FRAME_TYPE_MAX + 1), "unknown");
	assert_string_equal(fk_frame_type_name(~0u), "unknown");
	for (unsigned t = 1; t <= FK_FRAME_TYPE_MAX; t++)
		assert_string_not_equal(fk_frame_type_name(t), "unknown");
	assert_true(fk_frame_is_json(FK_FRAME_ERROR));
	assert_true(fk_frame_is_json(FK_FRAME_SIGNAL));
	assert_false(fk_frame_is_json(FK_FRAME_STDOUT));
	assert_false(fk_frame_is_json(0));
}

struct pair {
	int w, r; /* socketpair ends; r non-blocking */
	struct fk_frame_reader reader;
};

static int pair_setup(void **state)
{
	struct pair *p = calloc(1, sizeof(*p));
	int sv[2];

	assert_non_null(p);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	p->w = sv[0];
	p->r = sv[1];
	assert_int_equal(fcntl(p->r, F_SETFL, O_NONBLOCK), 0);
	assert_int_equal(fk_frame_reader_init(&p->reader), 0);
	*state = p;
	return 0;
}

static int pair_teardown(void **state)
{
	struct pair *p = *state;

	if (p->w >= 0)
		close(p->w);
	close(p->r);
	fk_frame_reader_free(&p->reader);
	free(p);
	return 0;
}

static void send_raw(struct pair *p, const void *buf, size_t len)
{
	assert_int_equal(write(p->w, buf, len), (ssize_t)len);
}

static void send_frame(struct pair *p, unsigned type, const void *payload, uint32_t len)
{
	assert_int_equal(fk_frame_write(p->w, type, payload, len), 0);
}

static int read_one(struct pair *p, struct fk_frame_hdr *hdr, const uint8_t **payload)
{
	return fk_frame_read(&p->reader, p->r, hdr, payload);
}

static void test_reader_whole_frames(void **state)
{
	struct pair *p = *state;
	struct fk_frame_hdr hdr;
	const uint8_t *payload;

	assert_int_equal(read_one(p, &hdr, &payload), 0); /* nothing yet */
	send_frame(p, FK_FRAME_REQUEST, "{\"op\":\"ping\"}", 13);
	assert_int_equal(read_one(p, &hdr, &payload), 1);
	assert_int_equal(hdr.type, FK_FRAME_REQUEST);
	assert_int_equal(hdr.len, 13);
	assert_memory_equal(payload, "{\"op\":\"ping\"}", 13);
	assert_int_equal(read_one(p, &hdr, &payload), 0);
	close(p->w);
	p->w = -1;
	assert_int_equal(read_one(p, &hdr, &payload), -ENODATA);
}

static void test_reader_several_frames_one_read(void **state)
{
	struct pair *p = *state;
	struct fk_frame_hdr hdr;
	const uint8_t *payload;

	send_frame(p, FK_FRAME_STDIN, "abc", 3);
	send_frame(p, FK_FRAME_STDIN_EOF, NULL, 0);
	send_frame(p, FK_FRAME_SIGNAL, "{\"signal\":15}", 13);
	close(p->w);
	p->w = -1;
	assert_int_equal(read_one(p, &hdr, &payload), 1);
	assert_int_equal(hdr.type, FK_FRAME_STDIN);
	assert_memory_equal(payload, "abc", 3);
	/* The rest is already buffered: returned without needing the socket. */
	assert_int_equal(read_one(p, &hdr, &payload), 1);
	assert_int_equal(hdr.type, FK_FRAME_STDIN_EOF);
	assert_int_equal(hdr.len, 0);
	assert_int_equal(read_one(p, &hdr, &payload), 1);
	assert_int_equal(hdr.type, FK_FRAME_SIGNAL);
	assert_memory_equal(payload, "{\"signal\":15}", 13);
	assert_int_equal(read_one(p, &hdr, &payload), -ENODATA);
}

static void test_reader_split_into_bytes(void **state)
{
	struct pair *p = *state;
	struct fk_frame_hdr hdr;
	const uint8_t *payload;
	uint8_t raw[FK_AGENT_HDR_LEN + 300];
	int frames = 0;

	for (size_t i = 0; i < 300; i++)
		raw[FK_AGENT_HDR_LEN + i] = (uint8_t)(i * 7);
	fk_frame_hdr_encode(raw, FK_FRAME_DATA, 300);
	for (int round = 0; round < 2; round++) {
		for (size_t i = 0; i < sizeof(raw); i++) {
			send_raw(p, &raw[i], 1);
			int ret = read_one(p, &hdr, &payload);
			if (i + 1 < sizeof(raw)) {
				assert_int_equal(ret, 0);
			} else {
				assert_int_equal(ret, 1);
				assert_int_equal(hdr.len, 300);
				assert_memory_equal(payload, raw + FK_AGENT_HDR_LEN, 300);
				frames++;
			}
		}
	}
	assert_int_equal(frames, 2);
}

static void test_reader_truncated_header_then_eof(void **state)
{
	struct pair *p = *state;
	struct fk_frame_hdr hdr;
	const uint8_t *payload;
	uint8_t raw[FK_AGENT_HDR_LEN];

	fk_frame_hdr_encode(raw, FK_FRAME_REQUEST, 2);
	send_raw(p, raw, 5);
	close(p->w);
	p->w = -1;
	assert_int_equal(read_one(p, &hdr, &payload), 0);
	assert_int_equal(read_one(p, &hdr, &payload), -EPIPE);
	assert_non_null(strstr(p->reader.why, "inside a frame"));
}

static void test_reader_truncated_payload_then_eof(void **state)
{
	struct pair *p = *state;
	struct fk_frame_hdr hdr;
	const uint8_t *payload;
	uint8_t raw[FK_AGENT_HDR_LEN + 4];

	fk_frame_hdr_encode(raw, FK_FRAME_STDOUT, 10);
	memcpy(raw + FK_AGENT_HDR_LEN, "abcd", 4);
	send_raw(p, raw, sizeof(raw));
	assert_int_equal(read_one(p, &hdr, &payload), 0);
	close(p->w);
	p->w = -1;
	assert_int_equal(read_one(p, &hdr, &payload), -EPIPE);
}

static void expect_reader_error(struct pair *p, unsigned magic, unsigned version, unsigned type,
				uint32_t len, int ret)
{
	struct fk_frame_hdr hdr;
	const uint8_t *payload;
	uint8_t raw[FK_AGENT_HDR_LEN];

	make_hdr(raw, magic, version, type, len);
	send_raw(p, raw, sizeof(raw));
	/* The header alone is enough to refuse: no waiting for a payload that may never come. */
	assert_int_equal(read_one(p, &hdr, &payload), ret);
	assert_true(strlen(p->reader.why) > 0);
}

static void test_reader_bad_magic(void **state)
{
	expect_reader_error(*state, 0x0000, FK_AGENT_VERSION, FK_FRAME_REQUEST, 2, -EPROTO);
}

static void test_reader_wrong_version(void **state)
{
	expect_reader_error(*state, FK_AGENT_MAGIC, 9, FK_FRAME_REQUEST, 2, -EPROTONOSUPPORT);
}

static void test_reader_unknown_type_zero(void **state)
{
	expect_reader_error(*state, FK_AGENT_MAGIC, FK_AGENT_VERSION, 0, 2, -EBADMSG);
}

static void test_reader_unknown_type_high(void **state)
{
	expect_reader_error(*state, FK_AGENT_MAGIC, FK_AGENT_VERSION, FK_FRAME_TYPE_MAX + 1, 2,
			    -EBADMSG);
}

static void test_reader_eof_frame_with_payload(void **state)
{
	expect_reader_error(*state, FK_AGENT_MAGIC, FK_AGENT_VERSION, FK_FRAME_DATA_EOF, 1,
			    -EBADMSG);
}

static void test_reader_oversized_data(void **state)
{
	expect_reader_error(*state, FK_AGENT_MAGIC, FK_AGENT_VERSION, FK_FRAME_DATA,
			    FK_AGENT_MAX_PAYLOAD + 1, -EMSGSIZE);
}

static void test_reader_oversized_json(void **state)
{
	expect_reader_error(*state, FK_AGENT_MAGIC, FK_AGENT_VERSION, FK_FRAME_REQUEST,
			    FK_AGENT_MAX_JSON + 1, -EMSGSIZE);
}

/* A peer streaming frames back to back never makes the reader hold more than one frame's room. */
static void test_reader_bounded(void **state)
{
	struct pair *p = *state;
	struct fk_frame_hdr hdr;
	const uint8_t *payload;
	uint8_t *big = malloc(FK_AGENT_MAX_PAYLOAD);
	int sndbuf = 4 * 1024 * 1024;
	int frames = 0;

	assert_non_null(big);
	for (size_t i = 0; i < FK_AGENT_MAX_PAYLOAD; i++)
		big[i] = (uint8_t)(i ^ (i >> 9));
	setsockopt(p->w, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	pid_t writer = fork();
	assert_true(writer >= 0);
	if (writer == 0) {
		for (int i = 0; i < 8; i++)
			if (fk_frame_write(p->w, FK_FRAME_DATA, big, FK_AGENT_MAX_PAYLOAD) < 0)
				_exit(1);
		_exit(0);
	}
	close(p->w);
	p->w = -1;
	for (;;) {
		int ret = read_one(p, &hdr, &payload);
		assert_true(p->reader.have <= FK_AGENT_HDR_LEN + FK_AGENT_MAX_PAYLOAD);
		if (ret == -ENODATA)
			break;
		assert_true(ret >= 0);
		if (ret == 1) {
			assert_int_equal(hdr.len, FK_AGENT_MAX_PAYLOAD);
			assert_memory_equal(payload, big, FK_AGENT_MAX_PAYLOAD);
			frames++;
		}
	}
	assert_int_equal(frames, 8);
	int status;
	assert_int_equal(waitpid(writer, &status, 0), writer);
	assert_int_equal(status, 0);
	free(big);
}

static void test_write_checks(void **state)
{
	struct pair *p = *state;
	static uint8_t big[FK_AGENT_MAX_PAYLOAD + 1];

	assert_int_equal(fk_frame_write(p->w, 0, NULL, 0), -EINVAL);
	assert_int_equal(fk_frame_write(p->w, FK_FRAME_TYPE_MAX + 1, NULL, 0), -EINVAL);
	assert_int_equal(fk_frame_write(p->w, FK_FRAME_DATA_EOF, "x", 1), -EMSGSIZE);
	assert_int_equal(fk_frame_write(p->w, FK_FRAME_RESPONSE, big, FK_AGENT_MAX_JSON + 1),
			 -EMSGSIZE);
	assert_int_equal(fk_frame_write(p->w, FK_FRAME_DATA, big, sizeof(big)), -EMSGSIZE);
	assert_int_equal(fk_frame_write(p->w, FK_FRAME_DATA, NULL, 3), -EINVAL);
}

static void test_write_to_closed_socket(void **state)
{
	struct pair *p = *state;

	close(p->r);
	p->r = open("/dev/null", O_RDONLY);
	/* No SIGPIPE handler installed: MSG_NOSIGNAL is what keeps this test alive. */
	assert_int_equal(fk_frame_write(p->w, FK_FRAME_STDOUT, "x", 1), -EPIPE);
}

static void test_write_to_closed_pipe(void **state)
{
	(void)state;
	int fds[2];
	void (*old)(int) = signal(SIGPIPE, SIG_IGN);

	assert_int_equal(pipe(fds), 0);
	close(fds[0]);
	assert_int_equal(fk_frame_write(fds[1], FK_FRAME_STDOUT, "x", 1), -EPIPE);
	close(fds[1]);
	signal(SIGPIPE, old);
}

/* Short writes: a pipe with a small buffer and a slow reader still gets whole frames. */
static void test_write_short_writes(void **state)
{
	(void)state;
	int fds[2];
	uint8_t *big = malloc(FK_AGENT_MAX_PAYLOAD);

	assert_non_null(big);
	for (size_t i = 0; i < FK_AGENT_MAX_PAYLOAD; i++)
		big[i] = (uint8_t)(i * 13);
	assert_int_equal(pipe(fds), 0);
	fcntl(fds[1], F_SETPIPE_SZ, 4096);
	/* Non-blocking too: fk_frame_write polls instead of failing with EAGAIN. */
	fcntl(fds[1], F_SETFL, O_NONBLOCK);
	pid_t writer = fork();
	assert_true(writer >= 0);
	if (writer == 0) {
		close(fds[0]);
		_exit(fk_frame_write(fds[1], FK_FRAME_DATA, big, FK_AGENT_MAX_PAYLOAD) == 0 ? 0
											    : 1);
	}
	close(fds[1]);
	struct fk_frame_reader reader;
	struct fk_frame_hdr hdr;
	const uint8_t *payload;
	int ret;
	assert_int_equal(fk_frame_reader_init(&reader), 0);
	while ((ret = fk_frame_read(&reader, fds[0], &hdr, &payload)) == 0)
		;
	assert_int_equal(ret, 1);
	assert_int_equal(hdr.len, FK_AGENT_MAX_PAYLOAD);
	assert_memory_equal(payload, big, FK_AGENT_MAX_PAYLOAD);
	assert_int_equal(fk_frame_read(&reader, fds[0], &hdr, &payload), -ENODATA);
	int status;
	assert_int_equal(waitpid(writer, &status, 0), writer);
	assert_int_equal(status, 0);
	fk_frame_reader_free(&reader);
	close(fds[0]);
	free(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_header_round_trip),
	    cmocka_unit_test(test_header_errors),
	    cmocka_unit_test(test_type_names),
	    cmocka_unit_test_setup_teardown(test_reader_whole_frames, pair_setup, pair_teardown),
	    cmocka_unit_test_setup_teardown(test_reader_several_frames_one_read, pair_setup,
					    pair_teardown),
	    cmocka_unit_test_setup_teardown(test_reader_split_into_bytes, pair_setup,
					    pair_teardown),
	    cmocka_unit_test_setup_teardown(test_reader_truncated_header_then_eof, pair_setup,
					    pair_teardown),
	    cmocka_unit_test_setup_teardown(test_reader_truncated_payload_then_eof, pair_setup,
					    pair_teardown),
	    cmocka_unit_test_setup_teardown(test_reader_bad_magic, pair_setup, pair_teardown),
	    cmocka_unit_test_setup_teardown(test_reader_wrong_version, pair_setup, pair_teardown),
	    cmocka_unit_test_setup_teardown(test_reader_unknown_type_zero, pair_setup,
					    pair_teardown),
	    cmocka_unit_test_setup_teardown(test_reader_unknown_type_high, pair_setup,
					    pair_teardown),
	    cmocka_unit_test_setup_teardown(test_reader_eof_frame_with_payload, pair_setup,
					    pair_teardown),
	    cmocka_unit_test_setup_teardown(test_reader_oversized_data, pair_setup, pair_teardown),
	    cmocka_unit_test_setup_teardown(test_reader_oversized_json, pair_setup, pair_teardown),
	    cmocka_unit_test_setup_teardown(test_reader_bounded, pair_setup, pair_teardown),
	    cmocka_unit_test_setup_teardown(test_write_checks, pair_setup, pair_teardown),
	    cmocka_unit_test_setup_teardown(test_write_to_closed_socket, pair_setup, pair_teardown),
	    cmocka_unit_test(test_write_to_closed_pipe),
	    cmocka_unit_test(test_write_short_writes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
