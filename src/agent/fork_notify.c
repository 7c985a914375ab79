/* SPDX-License-Identifier: MIT */
/* The VMM's side of the fork notification: see fork_notify.h. */
#include "agent/fork_notify.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent_client.h"
#include "forkd/agent_proto.h"
#include "jail/seccomp.h"

#define NOTIFY_ENTROPY_BYTES 64
/* First retry soon (the agent is normally listening already), then back off. */
#define NOTIFY_RETRY_MS	    5
#define NOTIFY_RETRY_MAX_MS 250
#define NOTIFY_CALL_MS	    5000

const char *fork_notify_state_name(int state)
{
	switch (state) {
	case FORK_NOTIFY_NONE:
		return "none";
	case FORK_NOTIFY_PENDING:
		return "pending";
	case FORK_NOTIFY_APPLIED:
		return "applied";
	case FORK_NOTIFY_FAILED:
		return "failed";
	default:
		return "unknown";
	}
}

static void to_hex(const uint8_t *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

static int fill_random(uint8_t *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = getrandom(buf + got, n - got, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		got += (size_t)r;
	}
	return 0;
}

json_t *fork_notify_request(const uint8_t genid[16])
{
	uint8_t entropy[NOTIFY_ENTROPY_BYTES], machine_id[16];
	char entropy_hex[2 * NOTIFY_ENTROPY_BYTES + 1], genid_hex[33], id_hex[33], host[32];
	struct timespec now;

	if (fill_random(entropy, sizeof(entropy)) < 0 ||
	    fill_random(machine_id, sizeof(machine_id)) < 0)
		return NULL;
	to_hex(entropy, sizeof(entropy), entropy_hex);
	to_hex(genid, 16, genid_hex);
	to_hex(machine_id, sizeof(machine_id), id_hex);
	snprintf(host, sizeof(host), "forkd-%.12s", genid_hex);
	clock_gettime(CLOCK_REALTIME, &now);
	return json_pack("{s:s,s:s,s:s,s:I,s:s,s:s}", "op", "fork_notify", "generation", genid_hex,
			 "entropy", entropy_hex, "realtime_ns",
			 (json_int_t)now.tv_sec * 1000000000 + now.tv_nsec, "hostname", host,
			 "machine_id", id_hex);
}

struct notify_job {
	struct fork_notify *fn;
	char uds[4200];
	uint8_t genid[16];
	int timeout_ms;
};

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * One attempt: connect, and only then take the time and send, so the clock the
 * guest steps to is not behind by however long reaching its agent took.
 */
static int notify_once(const char *uds, const uint8_t genid[16], struct fk_err *err)
{
	struct fk_frame_reader rd = {0};
	struct timeval tv = {.tv_sec = NOTIFY_CALL_MS / 1000};
	int64_t deadline = mono_ms() + NOTIFY_CALL_MS;
	struct fk_frame_hdr hdr;
	const uint8_t *payload;
	json_t *req = NULL, *resp = NULL;
	char *text = NULL;
	int fd, ret;

	fd = fk_vsock_connect(uds, FK_AGENT_PORT, NOTIFY_CALL_MS, err);
	if (fd < 0)
		return fd;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	req = fork_notify_request(genid);
	text = req ? json_dumps(req, JSON_COMPACT) : NULL;
	if (!text) {
		ret = fk_fail(err, ENOMEM, "out of memory or entropy");
		goto out;
	}
	ret = fk_frame_write(fd, FK_FRAME_REQUEST, text, (uint32_t)strlen(text));
	if (ret < 0) {
		fk_fail(err, -ret, "send to the agent at %s: %s", uds, strerror(-ret));
		goto out;
	}
	ret = fk_frame_reader_init(&rd);
	if (ret < 0) {
		fk_fail(err, -ret, "out of memory");
		goto out;
	}
	while ((ret = fk_frame_read(&rd, fd, &hdr, &payload)) == 0 || ret == -EAGAIN ||
	       ret == -EINTR)
		if (mono_ms() > deadline) {
			ret = fk_fail(err, ETIMEDOUT, "the agent at %s did not answer in %d ms",
				      uds, NOTIFY_CALL_MS);
			goto out;
		}
	if (ret < 0) {
		/* A closed stream: the agent went away (ENODATA/EPIPE), worth another try. */
		fk_fail(err, ret == -ENODATA ? EPIPE : -ret, "the agent at %s: %s", uds, rd.why);
		ret = ret == -ENODATA ? -EPIPE : ret;
		goto out;
	}
	resp = json_loadb((const char *)payload, hdr.len, 0, NULL);
	if (hdr.type == FK_FRAME_ERROR) {
		json_int_t code = json_integer_value(json_object_get(resp, "errno"));
		ret = fk_fail(err, code > 0 && code < 4096 ? (int)code : EREMOTEIO,
			      "the agent refused: %s",
			      json_string_value(json_object_get(resp, "error"))
				  ? json_string_value(json_object_get(resp, "error"))
				  : "no reason given");
	} else if (hdr.type != FK_FRAME_RESPONSE ||
		   !json_is_true(json_object_get(resp, "applied"))) {
		ret = fk_fail(err, EPROTO, "the agent answered without \"applied\":true");
	} else {
		ret = 0;
	}
out:
	json_decref(resp);
	json_decref(req);
	free(text);
	fk_frame_reader_free(&rd);
	close(fd);
	return ret;
}

static void *notify_thread(void *arg)
{
	struct notify_job *job = arg;
	int64_t start = mono_ms(), deadline = start + job->timeout_ms;
	struct fk_err err = {0};
	long retry_ms = NOTIFY_RETRY_MS;
	int ret;

	/* Refused: it still runs, under the process filter it inherited. */
	if (fk_seccomp_enter_role(FK_SECCOMP_ROLE_HELPER, &err) < 0)
		fprintf(stderr, "forkd-vmm: fork notification: %s\n", err.msg);

	for (;;) {
		ret = notify_once(job->uds, job->genid, &err);
		/* Not listening yet (a guest still booting its agent), or the socket not yet bound.
		 */
		if ((ret == -ECONNREFUSED || ret == -ENOENT || ret == -EPIPE) &&
		    mono_ms() + retry_ms < deadline) {
			struct timespec pause = {.tv_nsec = retry_ms * 1000000L};
			nanosleep(&pause, NULL);
			retry_ms =
			    retry_ms * 2 > NOTIFY_RETRY_MAX_MS ? NOTIFY_RETRY_MAX_MS : retry_ms * 2;
			continue;
		}
		break;
	}
	if (ret == 0) {
		atomic_store(&job->fn->applied_ms, (uint_fast64_t)(mono_ms() - start));
		atomic_store(&job->fn->state, FORK_NOTIFY_APPLIED);
	} else {
		snprintf(job->fn->error, sizeof(job->fn->error), "%.255s", err.msg);
		atomic_store(&job->fn->state, FORK_NOTIFY_FAILED);
		fprintf(stderr, "forkd-vmm: fork notification: %s\n", err.msg);
	}
	free(job);
	return NULL;
}

int fork_notify_start(struct fork_notify *fn, const char *uds_path, const uint8_t genid[16],
		      int timeout_ms, struct fk_err *err)
{
	struct notify_job *job = calloc(1, sizeof(*job));
	pthread_attr_t attr;
	pthread_t thread;
	int r;

	if (!job)
		return fk_fail(err, ENOMEM, "fork notification: out of memory");
	if (snprintf(job->uds, sizeof(job->uds), "%s", uds_path) >= (int)sizeof(job->uds)) {
		free(job);
		return fk_fail(err, ENAMETOOLONG, "fork notification: %s: path too long", uds_path);
	}
	job->fn = fn;
	memcpy(job->genid, genid, 16);
	job->timeout_ms = timeout_ms;
	atomic_store(&fn->state, FORK_NOTIFY_PENDING);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	r = pthread_create(&thread, &attr, notify_thread, job);
	pthread_attr_destroy(&attr);
	if (r) {
		free(job);
		atomic_store(&fn->state, FORK_NOTIFY_FAILED);
		return fk_fail(err, r, "fork notification: cannot start a thread: %s", strerror(r));
	}
	return 0;
}
