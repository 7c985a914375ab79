/* SPDX-License-Identifier: MIT */
/*
 * The host client (src/agent/agent_client.c), the `forkd exec/cp/agent`
 * commands and the VMM's fork notification, against the real forkd-agent
 * run on this host (--listen unix:, --no-identity) behind a small
 * hybrid-vsock relay that speaks forkd-vmm's "CONNECT <port>\n" / "OK <n>\n"
 * handshake. No VM and no AF_VSOCK: this runs on every machine. The same
 * paths through a real guest and the real device: tests/integration/test_sandbox.c.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent_client.h"
#include "agent/fork_notify.h"
#include "forkd/agent_proto.h"

#include "agent_relay.h"

#define CONNECT_MS 5000

static char dir[256];

static const char *forkd_path(void)
{
	const char *p = getenv("FORKD_CLI");
	return p && *p ? p : "build/forkd";
}

static int setup(void **state)
{
	(void)state;
	signal(SIGPIPE, SIG_IGN);
	snprintf(dir, sizeof(dir), "%s/forkd-agent-client-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(dir))
		return -1;
	return agent_relay_start(dir);
}

static int teardown(void **state)
{
	char cmd[300];

	(void)state;
	agent_relay_stop();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void test_connect_errors(void **state)
{
	struct fk_err err = {0};
	char missing[320];

	(void)state;
	assert_int_equal(fk_vsock_connect(relay_sock, 53, CONNECT_MS, &err), -ECONNREFUSED);
	assert_non_null(strstr(err.msg, "port 53"));
	snprintf(missing, sizeof(missing), "%s/none.sock", dir);
	assert_int_equal(fk_vsock_connect(missing, FK_AGENT_PORT, CONNECT_MS, &err), -ENOENT);
	assert_non_null(strstr(err.msg, missing));

	/* A peer that accepts and never answers CONNECT: a timeout, not a hang. */
	char mute_path[320];
	snprintf(mute_path, sizeof(mute_path), "%s/mute.sock", dir);
	int mute = unix_listen(mute_path);
	assert_true(mute >= 0);
	assert_int_equal(fk_vsock_connect(mute_path, FK_AGENT_PORT, 200, &err), -ETIMEDOUT);
	close(mute);

	/* What `forkd exec VM` accepts as VM. */
	char out[400];
	assert_int_equal(fk_agent_socket_path(dir, out, sizeof(out), &err), 0);
	assert_string_equal(out, relay_sock);
	assert_int_equal(fk_agent_socket_path(relay_sock, out, sizeof(out), &err), 0);
	assert_int_equal(fk_agent_socket_path("/etc/passwd", out, sizeof(out), &err), -EINVAL);
	assert_int_equal(fk_agent_socket_path("/no/such", out, sizeof(out), &err), -ENOENT);
}

static void test_call_and_exec(void **state)
{
	struct fk_exec_io io = {.in_fd = -1};
	struct fk_exec_result res;
	struct fk_err err = {0};
	json_t *resp, *req;
	char buf[64];

	(void)state;
	req = json_pack("{s:s}", "op", "ping");
	assert_int_equal(fk_agent_call(relay_sock, req, &resp, CONNECT_MS, &err), 0);
	json_decref(req);
	assert_string_equal(json_string_value(json_object_get(resp, "agent")), "forkd-agent");
	json_decref(resp);

	io.out_fd = memfd_create("o", 0);
	io.err_fd = memfd_create("e", 0);
	req = json_pack("{s:[s,s,s]}", "argv", "/bin/sh", "-c", "echo hi; echo oops >&2; exit 5");
	assert_int_equal(fk_agent_exec(relay_sock, req, &io, CONNECT_MS, &res, &err), 0);
	json_decref(req);
	assert_int_equal(res.exit_code, 5);
	assert_int_equal(pread(io.out_fd, buf, sizeof(buf), 0), 3);
	assert_memory_equal(buf, "hi\n", 3);
	assert_int_equal(pread(io.err_fd, buf, sizeof(buf), 0), 5);
	assert_memory_equal(buf, "oops\n", 5);

	/* An agent ERROR becomes the errno it carries, with its message. */
	req = json_pack("{s:[s]}", "argv", "/no/such/binary");
	assert_int_equal(fk_agent_exec(relay_sock, req, &io, CONNECT_MS, &res, &err), -ENOENT);
	json_decref(req);
	assert_non_null(strstr(err.msg, "/no/such/binary"));
	close(io.out_fd);
	close(io.err_fd);
}

/*
 * stdin and stdout at once, more than any socket buffer: the client must
 * read while it writes, or client and agent block on each other.
 */
static void test_exec_stdin_while_stdout(void **state)
{
	const size_t n = 16u << 20;
	struct fk_exec_result res;
	struct fk_err err = {0};
	struct fk_exec_io io;
	uint8_t *in = malloc(n), *out = malloc(n);

	(void)state;
	assert_non_null(in);
	assert_non_null(out);
	for (size_t i = 0; i < n; i++)
		in[i] = (uint8_t)(i * 2654435761u >> 13);
	io.in_fd = memfd_create("i", 0);
	io.out_fd = memfd_create("o", 0);
	io.err_fd = memfd_create("e", 0);
	assert_int_equal(write(io.in_fd, in, n), (ssize_t)n);
	lseek(io.in_fd, 0, SEEK_SET);
	json_t *req = json_pack("{s:[s]}", "argv", "cat");
	assert_int_equal(fk_agent_exec(relay_sock, req, &io, CONNECT_MS, &res, &err), 0);
	json_decref(req);
	assert_int_equal(res.exit_code, 0);
	assert_int_equal(res.out_bytes, n);
	assert_int_equal(pread(io.out_fd, out, n, 0), (ssize_t)n);
	assert_memory_equal(in, out, n);
	close(io.in_fd);
	close(io.out_fd);
	close(io.err_fd);
	free(in);
	free(out);
}

static void test_put_get(void **state)
{
	const size_t n = (32u << 20) + 12345;
	char guest_path[320];
	struct fk_err err = {0};
	uint64_t bytes;
	unsigned mode;
	int src = memfd_create("src", 0), dst = memfd_create("dst", 0);
	uint8_t *a = malloc(n), *b = malloc(n);

	(void)state;
	assert_non_null(a);
	assert_non_null(b);
	for (size_t i = 0; i < n; i++)
		a[i] = (uint8_t)(i ^ (i >> 11));
	assert_int_equal(write(src, a, n), (ssize_t)n);
	lseek(src, 0, SEEK_SET);
	snprintf(guest_path, sizeof(guest_path), "%s/put.bin", dir);
	assert_int_equal(fk_agent_put(relay_sock, src, guest_path, 0604, CONNECT_MS, &bytes, &err),
			 0);
	assert_int_equal(bytes, n);
	assert_int_equal(fk_agent_get(relay_sock, guest_path, dst, CONNECT_MS, &bytes, &mode, &err),
			 0);
	assert_int_equal(bytes, n);
	assert_int_equal(mode, 0604);
	assert_int_equal(pread(dst, b, n, 0), (ssize_t)n);
	assert_memory_equal(a, b, n);
	assert_int_equal(
	    fk_agent_get(relay_sock, "/no/such/file", dst, CONNECT_MS, &bytes, &mode, &err),
	    -ENOENT);
	close(src);
	close(dst);
	free(a);
	free(b);
}

/* Runs build/forkd with args; returns its exit status, stdout into out. */
static int forkd_cli(char *const args[], char *out, size_t out_len)
{
	int p[2];
	pid_t pid;
	int status;
	size_t have = 0;
	ssize_t n;

	assert_int_equal(pipe(p), 0);
	pid = fork();
	if (pid == 0) {
		dup2(p[1], STDOUT_FILENO);
		close(p[0]);
		execv(forkd_path(), args);
		_exit(99);
	}
	close(p[1]);
	while (have + 1 < out_len && (n = read(p[0], out + have, out_len - 1 - have)) > 0)
		have += (size_t)n;
	out[have] = '\0';
	close(p[0]);
	waitpid(pid, &status, 0);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void test_cli(void **state)
{
	char out[4096], local[320], back[320], remote[700];

	(void)state;
	char *exit7[] = {"forkd", "exec", dir, "--", "/bin/sh", "-c", "echo $0; exit 7", NULL};
	assert_int_equal(forkd_cli(exit7, out, sizeof(out)), 7);
	assert_string_equal(out, "/bin/sh\n");
	char *env[] = {
	    "forkd",   "exec", relay_sock,	     "--env", "A=b c", "--cwd", "/", "--",
	    "/bin/sh", "-c",   "echo \"$A\" $(pwd)", NULL};
	assert_int_equal(forkd_cli(env, out, sizeof(out)), 0);
	assert_string_equal(out, "b c /\n");
	char *sig[] = {"forkd", "exec", dir, "--", "/bin/sh", "-c", "kill -KILL $$", NULL};
	assert_int_equal(forkd_cli(sig, out, sizeof(out)), 128 + 9);
	char *missing[] = {"forkd", "exec", dir, "--", "/no/such/binary", NULL};
	assert_int_equal(forkd_cli(missing, out, sizeof(out)), 127);
	char *timeout[] = {"forkd", "exec", dir, "--timeout", "200", "--", "sleep", "30", NULL};
	assert_int_equal(forkd_cli(timeout, out, sizeof(out)), 124);
	char *nocmd[] = {"forkd", "exec", dir, NULL};
	assert_int_equal(forkd_cli(nocmd, out, sizeof(out)), 2);
	char *novm[] = {"forkd", "exec", "--", "true", NULL};
	assert_int_equal(forkd_cli(novm, out, sizeof(out)), 2);

	/* cp both ways, and the agent's own view. */
	snprintf(local, sizeof(local), "%s/local.txt", dir);
	snprintf(back, sizeof(back), "%s/back.txt", dir);
	snprintf(remote, sizeof(remote), "%s:%s/remote.txt", dir, dir);
	FILE *f = fopen(local, "w");
	assert_non_null(f);
	fputs("copied through the agent\n", f);
	fclose(f);
	chmod(local, 0751);
	char *up[] = {"forkd", "cp", local, remote, NULL};
	assert_int_equal(forkd_cli(up, out, sizeof(out)), 0);
	assert_string_equal(out, "{\"bytes\":25}\n");
	char *down[] = {"forkd", "cp", remote, back, NULL};
	assert_int_equal(forkd_cli(down, out, sizeof(out)), 0);
	struct stat st;
	assert_int_equal(stat(back, &st), 0);
	assert_int_equal(st.st_size, 25);
	assert_int_equal(st.st_mode & 07777, 0751);
	char *both_local[] = {"forkd", "cp", local, back, NULL};
	assert_int_equal(forkd_cli(both_local, out, sizeof(out)), 2);
	char *ping[] = {"forkd", "agent", dir, "ping", NULL};
	assert_int_equal(forkd_cli(ping, out, sizeof(out)), 0);
	assert_non_null(strstr(out, "\"forkd-agent\""));
	char *bad[] = {"forkd", "agent", dir, "frobnicate", NULL};
	assert_int_equal(forkd_cli(bad, out, sizeof(out)), 2);
}

static void test_fork_notify(void **state)
{
	static struct fork_notify fn;
	uint8_t genid[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
	struct fk_err err = {0};
	json_t *req = fork_notify_request(genid);

	(void)state;
	/* The request the VMM sends: fresh entropy each time, the host's time, a name from the ID.
	 */
	assert_non_null(req);
	assert_string_equal(json_string_value(json_object_get(req, "hostname")),
			    "forkd-010203040506");
	json_t *again = fork_notify_request(genid);
	assert_string_not_equal(json_string_value(json_object_get(req, "entropy")),
				json_string_value(json_object_get(again, "entropy")));
	assert_int_equal(strlen(json_string_value(json_object_get(req, "entropy"))), 128);
	json_decref(again);
	json_decref(req);

	assert_int_equal(fork_notify_start(&fn, relay_sock, genid, 5000, &err), 0);
	for (int i = 0; i < 500 && atomic_load(&fn.state) == FORK_NOTIFY_PENDING; i++)
		usleep(10 * 1000);
	if (atomic_load(&fn.state) != FORK_NOTIFY_APPLIED)
		fail_msg("fork notification: %s (%s)",
			 fork_notify_state_name(atomic_load(&fn.state)), fn.error);

	/* Nobody listening: it gives up at its deadline and says why. */
	static struct fork_notify none;
	char missing[320];
	snprintf(missing, sizeof(missing), "%s/none.sock", dir);
	assert_int_equal(fork_notify_start(&none, missing, genid, 300, &err), 0);
	for (int i = 0; i < 300 && atomic_load(&none.state) == FORK_NOTIFY_PENDING; i++)
		usleep(10 * 1000);
	assert_int_equal(atomic_load(&none.state), FORK_NOTIFY_FAILED);
	assert_non_null(strstr(none.error, missing));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_connect_errors),
	    cmocka_unit_test(test_call_and_exec),
	    cmocka_unit_test(test_exec_stdin_while_stdout),
	    cmocka_unit_test(test_put_get),
	    cmocka_unit_test(test_cli),
	    cmocka_unit_test(test_fork_notify),
	};
	return cmocka_run_group_tests_name("agent client against a host-run forkd-agent", tests,
					   setup, teardown);
}
