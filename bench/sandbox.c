/* SPDX-License-Identifier: MIT */
/*
 * Sandbox measurements against a running Linux VM with forkd-agent
 * (bench/sandbox.sh boots it). One JSON object per line:
 *
 *   {"bench":"sandbox","op":"exec_rtt",H,"runs":N,"p50_ms":..,"p99_ms":..}
 *       exec of `true`: request sent to EXIT received, one connection each
 *   {"bench":"sandbox","op":"vsock_bulk",H,"mib":N,"mib_s":..}
 *       N MiB of a command's stdout (head -c of /dev/zero) through agent and vsock
 *   {"bench":"sandbox","op":"branch_to_exec",H,"branches":B,"per_branch":K,
 *    "children":B*K,"p50_ms":..,"max_ms":..,"rng_distinct":bool}
 *       BRANCH request to the first exec answered in a child (its fork
 *       notification included), one sample per child: B BRANCHes of K
 *       children each, every child polled from its own thread; rng_distinct:
 *       every child read different bytes from /dev/urandom
 *
 * H is "host":"native", or "host":"nested","tcg":true|false inside the nested
 * test host (--host is FORKD_TESTHOST_KIND's value there).
 *
 *   sandbox-bench --vsock PATH --control PATH --host native|nested-tcg|nested-kvm
 *                 [--runs N] [--branches B] [--per-branch K] [--mib N] [--dir DIR]
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent_client.h"
#include "control/control.h"

#define CONNECT_MS 10000

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double percentile(double *v, int n, double p)
{
	int i = (int)(p * (n - 1) + 0.5);

	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return v[i < 0 ? 0 : (i >= n ? n - 1 : i)];
}

/* Runs `sh -c script`; stdout into a memfd returned in *out_fd (or discarded). */
static int run_sh(const char *uds, const char *script, int out_fd, struct fk_exec_result *res,
		  struct fk_err *err)
{
	json_t *req = json_pack("{s:[s,s,s]}", "argv", "/bin/sh", "-c", script);
	int null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	struct fk_exec_io io = {
	    .in_fd = -1, .out_fd = out_fd >= 0 ? out_fd : null_fd, .err_fd = STDERR_FILENO};
	int ret = fk_agent_exec(uds, req, &io, CONNECT_MS, res, err);

	json_decref(req);
	close(null_fd);
	if (ret == 0 && (res->exit_code || res->signal))
		ret = fk_fail(err, EIO, "sh -c '%s': exit %d signal %d", script, res->exit_code,
			      res->signal);
	return ret;
}

static int bench_exec_rtt(const char *uds, const char *host, int runs)
{
	double *t = calloc((size_t)runs, sizeof(*t));
	struct fk_exec_result res;
	struct fk_err err = {0};

	if (!t)
		return -ENOMEM;
	for (int i = 0; i < runs; i++) {
		double t0 = now_ms();
		if (run_sh(uds, "true", -1, &res, &err) < 0) {
			fprintf(stderr, "sandbox-bench: exec_rtt: %s\n", err.msg);
			free(t);
			return -EIO;
		}
		t[i] = now_ms() - t0;
	}
	double p50 = percentile(t, runs, 0.5), p99 = percentile(t, runs, 0.99);
	printf("{\"bench\":\"sandbox\",\"op\":\"exec_rtt\",%s,\"runs\":%d,"
	       "\"p50_ms\":%.3f,\"p99_ms\":%.3f}\n",
	       host, runs, p50, p99);
	free(t);
	return 0;
}

static int bench_bulk(const char *uds, const char *host, int mib)
{
	struct fk_exec_result res;
	struct fk_err err = {0};
	char script[96];

	snprintf(script, sizeof(script), "head -c %lld /dev/zero", (long long)mib << 20);
	double t0 = now_ms();
	if (run_sh(uds, script, -1, &res, &err) < 0) {
		fprintf(stderr, "sandbox-bench: vsock_bulk: %s\n", err.msg);
		return -EIO;
	}
	double ms = now_ms() - t0;
	if (res.out_bytes != (uint64_t)mib << 20) {
		fprintf(stderr, "sandbox-bench: vsock_bulk: got %llu bytes, expected %lld\n",
			(unsigned long long)res.out_bytes, (long long)mib << 20);
		return -EIO;
	}
	printf("{\"bench\":\"sandbox\",\"op\":\"vsock_bulk\",%s,\"mib\":%d,"
	       "\"mib_s\":%.1f}\n",
	       host, mib, mib / (ms / 1e3));
	return 0;
}

static int call_ok(const char *sock, json_t *req, json_t **reply)
{
	struct fk_err err = {0};
	int ret = control_call(sock, req, reply, 60000, &err);

	json_decref(req);
	if (ret < 0) {
		fprintf(stderr, "sandbox-bench: %s: %s\n", sock, err.msg);
		return ret;
	}
	if (!json_is_true(json_object_get(*reply, "ok"))) {
		fprintf(stderr, "sandbox-bench: %s: %s\n", sock,
			json_string_value(json_object_get(*reply, "error")));
		json_decref(*reply);
		*reply = NULL;
		return -EIO;
	}
	return 0;
}

/* One BRANCH child, polled from its own thread so that every child of a
 * BRANCH is timed from the same request. */
struct child_probe {
	pthread_t thread;
	char uds[700];
	double t0, ms;
	char rng[40];
	int ret;
	struct fk_err err;
};

static void *probe_child(void *arg)
{
	struct child_probe *c = arg;
	struct fk_exec_result res;
	int fd = memfd_create("rng", MFD_CLOEXEC);

	/* The child's socket appears once it runs; the agent answers after its
	 * notification. */
	for (;;) {
		c->ret = run_sh(c->uds, "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'", fd,
				&res, &c->err);
		if (c->ret == 0 || now_ms() - c->t0 > 120000)
			break;
		/* Whatever a failed attempt wrote is not the answer. */
		if (ftruncate(fd, 0) < 0 || lseek(fd, 0, SEEK_SET) < 0)
			c->ret = fk_fail_errno(&c->err, errno, "memfd: truncate");
		usleep(2000);
	}
	c->ms = now_ms() - c->t0;
	ssize_t n = pread(fd, c->rng, sizeof(c->rng) - 1, 0);
	c->rng[n > 0 ? n : 0] = '\0';
	close(fd);
	return NULL;
}

/* BRANCH request to the first exec answered, for every child of `branches`
 * BRANCHes of `per` children each. */
static int bench_branch(const char *control, const char *host, int branches, int per,
			const char *dir)
{
	int total = branches * per, done = 0;
	double *t = calloc((size_t)total, sizeof(*t));
	char(*rng)[40] = calloc((size_t)total, sizeof(*rng));
	struct child_probe *c = calloc((size_t)per, sizeof(*c));
	bool distinct = true;
	int ret = -EIO;

	if (!t || !rng || !c)
		goto out;
	for (int b = 0; b < branches; b++) {
		char bdir[600], csock[700];
		json_t *reply;
		int started = 0, failed = 0;

		snprintf(bdir, sizeof(bdir), "%s/branch-%d", dir, b);
		double t0 = now_ms();
		if (call_ok(control,
			    json_pack("{s:s,s:i,s:s}", "cmd", "branch", "n", per, "dir", bdir),
			    &reply) < 0)
			goto out;
		long long zygote = json_integer_value(json_object_get(reply, "zygote"));
		json_decref(reply);
		for (int k = 0; k < per; k++) {
			memset(&c[k], 0, sizeof(c[k]));
			snprintf(c[k].uds, sizeof(c[k].uds), "%s/child-%d/vsock.sock", bdir, k);
			c[k].t0 = t0;
			if (pthread_create(&c[k].thread, NULL, probe_child, &c[k]) != 0) {
				fprintf(stderr, "sandbox-bench: branch %d: pthread_create failed\n",
					b);
				failed = 1;
				break;
			}
			started++;
		}
		for (int k = 0; k < started; k++) {
			pthread_join(c[k].thread, NULL);
			if (c[k].ret < 0) {
				fprintf(stderr, "sandbox-bench: branch %d child %d: %s\n", b, k,
					c[k].err.msg);
				failed = 1;
				continue;
			}
			t[done] = c[k].ms;
			memcpy(rng[done], c[k].rng, sizeof(rng[done]));
			for (int j = 0; j < done; j++)
				distinct &= strcmp(rng[done], rng[j]) != 0;
			done++;
		}
		for (int k = 0; k < per; k++) {
			snprintf(csock, sizeof(csock), "%s/child-%d/control.sock", bdir, k);
			if (call_ok(csock, json_pack("{s:s}", "cmd", "shutdown"), &reply) == 0)
				json_decref(reply);
		}
		if (call_ok(control,
			    json_pack("{s:s,s:s,s:I}", "cmd", "zygote", "action", "release", "id",
				      (json_int_t)zygote),
			    &reply) == 0)
			json_decref(reply);
		if (failed)
			goto out;
	}
	printf("{\"bench\":\"sandbox\",\"op\":\"branch_to_exec\",%s,\"branches\":%d,"
	       "\"per_branch\":%d,\"children\":%d,\"p50_ms\":%.1f,\"max_ms\":%.1f,"
	       "\"rng_distinct\":%s}\n",
	       host, branches, per, total, percentile(t, total, 0.5), percentile(t, total, 1.0),
	       distinct ? "true" : "false");
	ret = 0;
out:
	free(t);
	free(rng);
	free(c);
	return ret;
}

/* The row's host fields for FORKD_TESTHOST_KIND's values: nested rows say so,
 * and whether the nested host is an emulator (TCG). NULL for anything else. */
static const char *host_fields(const char *kind)
{
	if (!strcmp(kind, "native"))
		return "\"host\":\"native\"";
	if (!strcmp(kind, "nested-tcg"))
		return "\"host\":\"nested\",\"tcg\":true";
	if (!strcmp(kind, "nested-kvm"))
		return "\"host\":\"nested\",\"tcg\":false";
	return NULL;
}

int main(int argc, char **argv)
{
	const char *vsock = NULL, *control = NULL, *host = NULL, *dir = "/tmp";
	int runs = 200, branches = 5, per = 4, mib = 256;

	/* One row per line as it is measured, also into a pipe. */
	setvbuf(stdout, NULL, _IOLBF, 0);

	for (int i = 1; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v) {
			fprintf(stderr, "sandbox-bench: %s: expected a value\n", argv[i]);
			return 2;
		}
		if (!strcmp(argv[i], "--vsock"))
			vsock = v;
		else if (!strcmp(argv[i], "--control"))
			control = v;
		else if (!strcmp(argv[i], "--host"))
			host = v;
		else if (!strcmp(argv[i], "--dir"))
			dir = v;
		else if (!strcmp(argv[i], "--runs"))
			runs = atoi(v);
		else if (!strcmp(argv[i], "--branches"))
			branches = atoi(v);
		else if (!strcmp(argv[i], "--per-branch"))
			per = atoi(v);
		else if (!strcmp(argv[i], "--mib"))
			mib = atoi(v);
		else {
			fprintf(stderr, "sandbox-bench: unknown option '%s'\n", argv[i]);
			return 2;
		}
		i++;
	}
	if (host)
		host = host_fields(host);
	if (!vsock || !control || !host || runs < 1 || runs > 100000 || branches < 1 ||
	    branches > 1000 || per < 1 || per > 64 || mib < 1 || mib > 65536) {
		fprintf(stderr, "usage: sandbox-bench --vsock PATH --control PATH --host "
				"native|nested-tcg|nested-kvm [--runs 1..100000] [--branches "
				"1..1000] [--per-branch 1..64] [--mib 1..65536] [--dir DIR]\n");
		return 2;
	}
	if (bench_exec_rtt(vsock, host, runs) < 0 || bench_bulk(vsock, host, mib) < 0 ||
	    bench_branch(control, host, branches, per, dir) < 0)
		return 1;
	return 0;
}
