/* SPDX-License-Identifier: MIT */
/*
 * Cgroup limits through forkd serve's REST API, with probe guests: a VM
 * created with memory_max_mib, cpu_max and pids_max runs in its own cgroup
 * with exactly those values (read from the cgroup files), its BRANCH
 * children join that cgroup and the copies their writes make are charged to
 * it, so a family that outgrows the limit is OOM-killed inside it while a
 * VM outside runs on; VMs spawned from a snapshot each get a cgroup of
 * their own; a daemon restarted after SIGKILL still shows the limits; and
 * a deleted VM's cgroup is removed.
 *
 * needs=cgroup2, like itest_jail_cgroup: the development machines mount
 * cgroup v1, so this runs in the nested test host, whose kernel is ours to
 * mount cgroup2 in.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "cgroup_files.h"
#include "harness.h"
#include "serve_proc.h"
#include "where.h"

#define PARENT	     "/sys/fs/cgroup/forkd"
#define MiB	     (1LL << 20)
#define FAMILY_LIMIT 160 /* MiB: the source fits, the source and two writing children do not */

static char dir[256], sock[320], state[300];
static pid_t daemon_pid;

/*
 * One HTTP/1.0 request on the daemon's Unix socket (so the reply ends with
 * the connection): returns the status; *out gets the JSON body (NULL if none).
 */
static int http(const char *method, const char *path, const char *body, json_t **out)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	char head[512], *buf = NULL;
	size_t len = 0, cap = 0;
	int fd, status = -1;
	ssize_t n;

	*out = NULL;
	assert_true(strlen(sock) < sizeof(a.sun_path));
	memcpy(a.sun_path, sock, strlen(sock) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		close(fd);
		return -errno;
	}
	snprintf(head, sizeof(head),
		 "%s %s HTTP/1.0\r\nHost: forkd\r\nContent-Type: application/json\r\n"
		 "Content-Length: %zu\r\n\r\n",
		 method, path, body ? strlen(body) : 0);
	assert_int_equal(write(fd, head, strlen(head)), (ssize_t)strlen(head));
	if (body)
		assert_int_equal(write(fd, body, strlen(body)), (ssize_t)strlen(body));
	for (;;) {
		if (cap - len < 4096) {
			cap = cap ? cap * 2 : 65536;
			buf = realloc(buf, cap);
			assert_non_null(buf);
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	if (!buf)
		return -EIO;
	buf[len] = '\0';
	if (sscanf(buf, "HTTP/1.%*d %d", &status) == 1) {
		char *b = strstr(buf, "\r\n\r\n");
		if (b)
			*out = json_loads(b + 4, 0, NULL);
	}
	free(buf);
	return status;
}

static json_t *http_expect(const char *method, const char *path, const char *body, int want)
{
	json_t *j;
	int st = http(method, path, body, &j);

	if (st != want) {
		char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
		fail_msg("%s %s: status %d (expected %d): %s", method, path, st, want,
			 text ? text : "(no JSON)");
	}
	return j;
}

static void start_daemon(void)
{
	char log[400];

	snprintf(log, sizeof(log), "%s/serve.log", dir);
	daemon_pid = serve_start(state, sock, log, NULL);
}

static void kill_daemon(int sig)
{
	serve_stop(&daemon_pid, sig);
}

static int setup(void **state_)
{
	(void)state_;
	if (cg_need_v2("itest_serve_cgroup") < 0)
		return -1;
	if (harness_tmpdir_create(dir, sizeof(dir), "servecg") < 0)
		return -1;
	snprintf(state, sizeof(state), "%s/state", dir);
	snprintf(sock, sizeof(sock), "%s/forkd.sock", dir);
	return 0;
}

static int teardown(void **state_)
{
	json_t *j = NULL, *vm;
	size_t i;

	(void)state_;
	if (daemon_pid) {
		/* Whatever a failed test left: every VM goes with its tree. */
		if (http("GET", "/v1/vms", NULL, &j) == 200) {
			json_array_foreach(json_object_get(j, "vms"), i, vm)
			{
				char path[128];
				json_t *r = NULL;

				snprintf(path, sizeof(path), "/v1/vms/%s?cascade=true",
					 json_string_value(json_object_get(vm, "id")));
				http("DELETE", path, NULL, &r);
				json_decref(r);
			}
		}
		json_decref(j);
		kill_daemon(SIGTERM);
	}
	return harness_tmpdir_remove(dir);
}

/* A file of cgroup cg (cgroup_files.h reads it). */
static const char *cg_file(const char *cg, const char *file)
{
	static char path[400]; /* one at a time: each use is read before the next call */

	snprintf(path, sizeof(path), "%.300s/%.60s", cg, file);
	return path;
}

static void cg_text(const char *cg, const char *file, char *buf, size_t len)
{
	char path[400];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", cg, file);
	buf[0] = '\0';
	f = fopen(path, "r");
	if (!f)
		fail_msg("%s: %s", path, strerror(errno));
	if (!fgets(buf, (int)len, f))
		buf[0] = '\0';
	fclose(f);
	buf[strcspn(buf, "\n")] = '\0';
}

static bool cg_has_pid(const char *cg, long long pid)
{
	char path[400];
	long long v;
	bool found = false;
	FILE *f;

	snprintf(path, sizeof(path), "%s/cgroup.procs", cg);
	f = fopen(path, "r");
	if (!f)
		return false;
	while (fscanf(f, "%lld", &v) == 1)
		found |= v == pid;
	fclose(f);
	return found;
}

static bool exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static void wait_gone(const char *path)
{
	for (long long end = harness_deadline(10000); exists(path) && now_ms() < end;)
		usleep(50 * 1000);
	if (exists(path))
		fail_msg("%s still exists after its VM was deleted", path);
}

static const char *str(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	if (!s)
		fail_msg("no string \"%s\"", key);
	return s;
}

static json_t *get_vm(const char *id)
{
	char path[128];

	snprintf(path, sizeof(path), "/v1/vms/%s", id);
	return http_expect("GET", path, NULL, 200);
}

static void delete_vm(const char *id)
{
	char path[128];

	snprintf(path, sizeof(path), "/v1/vms/%s?cascade=true", id);
	json_decref(http_expect("DELETE", path, NULL, 200));
}

/* A probe VM through the API; body fields beyond the kernel in `extra` ("" for none). */
static json_t *create(const char *append, int mem_mib, const char *extra)
{
	char body[1200];

	snprintf(body, sizeof(body),
		 "{\"kernel\":\"%s\",\"mem_mib\":%d,\"append\":\"%s\",\"vsock\":false%s}",
		 harness_probe(), mem_mib, append, extra);
	return http_expect("POST", "/v1/vms", body, 201);
}

static void test_limits_of_a_family(void **state_)
{
	char cg[200], text[64], path[200], body[200], src_id[32], sib_id[32];
	json_t *a, *sib, *lim, *br, *kids = NULL, *kid, *j;
	long long a_pid, sib_pid, peak = -1, ooms = 0;
	size_t i;
	int st;

	(void)state_;
	start_daemon();
	/* Refused before anything starts: the field and what it takes. */
	snprintf(body, sizeof(body), "{\"kernel\":\"%s\",\"cpu_max\":\"lots\"}", harness_probe());
	assert_int_equal(http("POST", "/v1/vms", body, &j), 400);
	{
		char *text = json_dumps(j, 0);
		assert_non_null(text);
		assert_non_null(strstr(text, "cpu_max"));
		free(text);
	}
	json_decref(j);

	/* A source writing 64 MiB over and over, in a family limit of 160 MiB. */
	a = create("work=pattern pattern_mib=64", 256,
		   ",\"memory_max_mib\":160,\"cpu_max\":\"50000\",\"pids_max\":64");
	snprintf(src_id, sizeof(src_id), "%s", str(a, "id"));
	a_pid = json_integer_value(json_object_get(a, "pid"));
	lim = json_object_get(a, "limits");
	assert_true(json_is_object(lim));
	assert_int_equal(json_integer_value(json_object_get(lim, "memory_max_mib")), FAMILY_LIMIT);
	assert_string_equal(str(lim, "cpu_max"), "50000/100000");
	assert_int_equal(json_integer_value(json_object_get(lim, "pids_max")), 64);
	snprintf(cg, sizeof(cg), "%s/%s", PARENT, src_id);
	assert_string_equal(str(lim, "cgroup"), cg);
	/* From outside: the cgroup has those values, and the VMM in it. */
	assert_int_equal(cg_value(cg_file(cg, "memory.max")), FAMILY_LIMIT * MiB);
	cg_text(cg, "cpu.max", text, sizeof(text));
	assert_string_equal(text, "50000 100000");
	assert_int_equal(cg_value(cg_file(cg, "pids.max")), 64);
	assert_true(cg_has_pid(cg, a_pid));

	/* A VM without limits: no cgroup of its own, and it runs on whatever the family does. */
	sib = create("work=pattern pattern_mib=32", 128, "");
	snprintf(sib_id, sizeof(sib_id), "%s", str(sib, "id"));
	sib_pid = json_integer_value(json_object_get(sib, "pid"));
	assert_true(json_is_null(json_object_get(sib, "limits")));
	assert_false(cg_has_pid(cg, sib_pid));

	/*
	 * Two children, each rewriting its 64 MiB: every page they write is a
	 * copy charged to the family, which then needs about 4 x 64 MiB (the
	 * source, the zygote's pages, two children) in 160. The branch itself
	 * may lose a child to the OOM killer before it answers.
	 */
	snprintf(path, sizeof(path), "/v1/vms/%s/branch", src_id);
	st = http("POST", path, "{\"n\":2}", &br);
	fprintf(stderr, "branch of 2 under memory.max %d MiB: status %d\n", FAMILY_LIMIT, st);
	if (st == 201) {
		kids = json_object_get(br, "children");
		assert_int_equal(json_array_size(kids), 2);
		json_array_foreach(kids, i, kid)
		{
			/* A child shows its family's limits and cgroup, and is in it (if alive). */
			lim = json_object_get(kid, "limits");
			assert_true(json_is_object(lim));
			assert_string_equal(str(lim, "cgroup"), cg);
			assert_int_equal(json_integer_value(json_object_get(lim, "memory_max_mib")),
					 FAMILY_LIMIT);
			long long pid = json_integer_value(json_object_get(kid, "pid"));
			assert_true(cg_has_pid(cg, pid) || kill((pid_t)pid, 0) < 0);
		}
	}
	for (long long end = harness_deadline(60000); now_ms() < end && ooms <= 0;) {
		long long v = cg_value(cg_file(cg, "memory.peak"));
		if (v > peak)
			peak = v;
		ooms = cg_key(cg_file(cg, "memory.events"), "oom_kill");
		usleep(50 * 1000);
	}
	if (cg_value(cg_file(cg, "memory.peak")) > peak)
		peak = cg_value(cg_file(cg, "memory.peak"));
	fprintf(stderr, "family: oom_kill %lld, memory.peak %lld MiB (limit %d MiB)\n", ooms,
		peak / MiB, FAMILY_LIMIT);
	assert_true(ooms > 0);
	assert_true(peak > 0 && peak <= FAMILY_LIMIT * MiB);

	/* The daemon saw a member of the family die; one with a status died of SIGKILL. */
	{
		size_t dead = 0;
		for (long long end = harness_deadline(20000); now_ms() < end && !dead;) {
			json_t *vms = http_expect("GET", "/v1/vms", NULL, 200), *vm;
			json_array_foreach(json_object_get(vms, "vms"), i, vm)
			{
				json_t *l = json_object_get(vm, "limits");
				json_t *es = json_object_get(vm, "exit_status");
				if (!json_is_object(l) || strcmp(str(l, "cgroup"), cg) != 0 ||
				    strcmp(str(vm, "state"), "exited") != 0)
					continue;
				dead++;
				if (json_is_integer(es))
					assert_int_equal(json_integer_value(es), 128 + SIGKILL);
			}
			json_decref(vms);
			if (!dead)
				usleep(200 * 1000);
		}
		if (st == 201)
			assert_true(dead > 0);
		fprintf(stderr, "family members the daemon shows exited: %zu\n", dead);
	}
	/* The VM outside the family never noticed. */
	j = get_vm(sib_id);
	assert_string_equal(str(j, "state"), "running");
	json_decref(j);
	assert_int_equal(kill((pid_t)sib_pid, 0), 0);

	/* A daemon killed and restarted still shows the limits. */
	kill_daemon(SIGKILL);
	start_daemon();
	j = get_vm(src_id);
	lim = json_object_get(j, "limits");
	assert_true(json_is_object(lim));
	assert_string_equal(str(lim, "cgroup"), cg);
	assert_string_equal(str(lim, "cpu_max"), "50000/100000");
	json_decref(j);

	delete_vm(src_id);
	wait_gone(cg);
	delete_vm(sib_id);
	json_decref(br);
	json_decref(a);
	json_decref(sib);
}

static void test_spawned_vms_get_a_cgroup_each(void **state_)
{
	char path[200], cg[2][200], text[64], src_id[32];
	json_t *a, *r, *vms, *vm;
	size_t i;

	(void)state_;
	start_daemon();
	a = create("work=pattern pattern_mib=8", 64, "");
	snprintf(src_id, sizeof(src_id), "%s", str(a, "id"));
	snprintf(path, sizeof(path), "/v1/vms/%s/snapshot", src_id);
	json_decref(http_expect("POST", path, "{\"tag\":\"base\"}", 201));
	r = http_expect("POST", "/v1/snapshots/base/spawn",
			"{\"n\":2,\"pids_max\":32,\"cpu_max\":\"20000/50000\"}", 201);
	vms = json_object_get(r, "vms");
	assert_int_equal(json_array_size(vms), 2);
	json_array_foreach(vms, i, vm)
	{
		json_t *lim = json_object_get(vm, "limits");

		assert_true(json_is_object(lim));
		assert_true(json_is_null(json_object_get(lim, "memory_max_mib")));
		assert_int_equal(json_integer_value(json_object_get(lim, "pids_max")), 32);
		assert_string_equal(str(lim, "cpu_max"), "20000/50000");
		snprintf(cg[i], sizeof(cg[i]), "%s/%s", PARENT, str(vm, "id"));
		assert_string_equal(str(lim, "cgroup"), cg[i]);
		assert_int_equal(cg_value(cg_file(cg[i], "pids.max")), 32);
		cg_text(cg[i], "cpu.max", text, sizeof(text));
		assert_string_equal(text, "20000 50000");
		cg_text(cg[i], "memory.max", text, sizeof(text));
		assert_string_equal(text, "max");
		assert_true(cg_has_pid(cg[i], json_integer_value(json_object_get(vm, "pid"))));
	}
	assert_string_not_equal(cg[0], cg[1]);
	json_array_foreach(vms, i, vm)
	{
		delete_vm(str(vm, "id"));
		wait_gone(cg[i]);
	}
	json_decref(r);
	json_decref(http_expect("DELETE", "/v1/snapshots/base", NULL, 200));
	delete_vm(src_id);
	json_decref(a);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_limits_of_a_family, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_spawned_vms_get_a_cgroup_each, setup, teardown),
	};
	if (where_begin(argc, argv, NEEDS_CGROUP2, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	return cmocka_run_group_tests_name("cgroup limits through forkd serve", tests, NULL, NULL);
}
