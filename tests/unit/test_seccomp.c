/* SPDX-License-Identifier: MIT */
/*
 * The seccomp allow-lists (src/jail/seccomp.c): every role's filter builds,
 * and, in a forked child that installs it, allowed calls work while a
 * forbidden one ends the process with FK_SECCOMP_EXIT_STATUS and the line
 * naming the thread's role and the syscall.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/config.h"
#include "jail/seccomp.h"

/* What a child did under its filter: its exit status (or signal) and its stderr. */
struct outcome {
	bool exited;
	int status; /* exit status, or the signal that killed it */
	char err[512];
};

typedef void (*child_fn)(void);

/* Runs fn in a child after installing role's filter in mode; collects how it ended. */
static void run_child(enum fk_seccomp_role role, enum fk_seccomp_mode mode, child_fn fn,
		      struct outcome *out)
{
	int errpipe[2], ws = 0;
	ssize_t n, got = 0;
	pid_t pid;

	memset(out, 0, sizeof(*out));
	assert_int_equal(pipe(errpipe), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct fk_err err = {0};

		dup2(errpipe[1], STDERR_FILENO);
		close(errpipe[0]);
		if (fk_seccomp_install_process(mode, &err) < 0) {
			fprintf(stderr, "install: %s\n", err.msg);
			_exit(100);
		}
		if (role != FK_SECCOMP_ROLE_MAIN && fk_seccomp_enter_role(role, &err) < 0) {
			fprintf(stderr, "enter role: %s\n", err.msg);
			_exit(101);
		}
		fn();
		_exit(0);
	}
	close(errpipe[1]);
	while ((n = read(errpipe[0], out->err + got, sizeof(out->err) - 1 - (size_t)got)) > 0)
		got += n;
	close(errpipe[0]);
	out->err[got] = '\0';
	assert_int_equal(waitpid(pid, &ws, 0), pid);
	out->exited = WIFEXITED(ws);
	out->status = WIFEXITED(ws) ? WEXITSTATUS(ws) : WTERMSIG(ws);
}

static void expect_denied(const struct outcome *o, const char *role, const char *name, int nr)
{
	char want[160];

	snprintf(want, sizeof(want),
		 "forkd-vmm: seccomp: thread %s made forbidden syscall %s (nr %d)\n", role, name,
		 nr);
	if (!o->exited || o->status != FK_SECCOMP_EXIT_STATUS || !strstr(o->err, want))
		fail_msg("expected exit %d with '%s'; got %s %d, stderr '%s'",
			 FK_SECCOMP_EXIT_STATUS, want, o->exited ? "exit" : "signal", o->status,
			 o->err);
}

static void expect_clean_exit(const struct outcome *o)
{
	if (!o->exited || o->status != 0)
		fail_msg("expected exit 0; got %s %d, stderr '%s'", o->exited ? "exit" : "signal",
			 o->status, o->err);
}

/* ---- what the children do ---- */

/* Allowed everywhere: memory, time, writing to a descriptor it holds. */
static void do_common_calls(void)
{
	struct timespec ts;
	void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (m == MAP_FAILED || clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
		_exit(10);
	((volatile char *)m)[0] = 1;
	munmap(m, 4096);
	if (write(STDERR_FILENO, "", 0) != 0)
		_exit(11);
	if (getpid() <= 0)
		_exit(12);
}

static void do_main_open(void)
{
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);

	do_common_calls();
	if (fd < 0)
		_exit(13);
	close(fd);
}

static void do_inet_socket(void)
{
	do_common_calls();
	socket(AF_INET, SOCK_STREAM, 0);
	_exit(20); /* not reached when denied */
}

static void do_unix_socket_then_inet(void)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		_exit(21);
	close(fd);
	socket(AF_INET6, SOCK_DGRAM, 0);
	_exit(22);
}

static void do_execve(void)
{
	char *const argv[] = {"true", NULL};

	execve("/bin/true", argv, NULL);
	_exit(23);
}

static void *thread_main(void *arg)
{
	return arg;
}

/* A thread (clone with CLONE_THREAD) and a fork are allowed on the main thread. */
static void do_thread_and_fork(void)
{
	pthread_t t;
	void *ret = NULL;
	int ws = 0;
	pid_t pid;

	if (pthread_create(&t, NULL, thread_main, (void *)0x5) != 0 || pthread_join(t, &ret) != 0 ||
	    ret != (void *)0x5)
		_exit(30);
	pid = fork();
	if (pid == 0)
		_exit(7);
	if (pid < 0 || waitpid(pid, &ws, 0) != pid || !WIFEXITED(ws) || WEXITSTATUS(ws) != 7)
		_exit(31);
	/* clone3 cannot be inspected: it is refused with ENOSYS (glibc then uses clone). */
	errno = 0;
	if (syscall(SYS_clone3, NULL, 0) != -1 || errno != ENOSYS)
		_exit(32);
}

/* A new user namespace through clone: the flags are not a thread's nor fork()'s. */
static void do_clone_newuser(void)
{
	syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, NULL, NULL, NULL, 0);
	_exit(33);
}

static void do_mmap_exec(void)
{
	mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	_exit(34);
}

static void do_sigsys_handler_change(void)
{
	struct sigaction sa = {.sa_handler = SIG_IGN};

	sigaction(SIGSYS, &sa, NULL);
	_exit(35);
}

/* A vCPU thread may not open files nor make non-KVM ioctls. */
static void do_vcpu_open(void)
{
	do_common_calls();
	open("/etc/hostname", O_RDONLY);
	_exit(40);
}

static void do_vcpu_foreign_ioctl(void)
{
	int n = 0;

	/* KVM_RUN on a descriptor that is no vCPU: allowed by the filter, refused by the kernel. */
	if (ioctl(STDERR_FILENO, KVM_RUN, 0) != -1)
		_exit(41);
	ioctl(STDERR_FILENO, FIONREAD, &n);
	_exit(42);
}

static void do_helper_fork(void)
{
	fork();
	_exit(43);
}

/* What the fork-notification thread does: JSON in and out (jansson seeds itself on first use). */
static void do_helper_json(void)
{
	json_t *o = json_pack("{s:s,s:I}", "op", "fork_notify", "n", (json_int_t)42);
	char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;

	if (!text || strcmp(text, "{\"op\":\"fork_notify\",\"n\":42}") != 0)
		_exit(44);
	free(text);
	json_decref(o);
}

static void do_abort(void)
{
	abort();
}

static void do_log_mode_runs_it(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	/* Logged by the kernel, not refused. */
	if (fd < 0)
		_exit(50);
	close(fd);
}

/* ---- tests ---- */

static void test_parse_mode(void **state)
{
	enum fk_seccomp_mode m;

	(void)state;
	assert_int_equal(fk_seccomp_parse_mode("on", &m), 0);
	assert_int_equal(m, FK_SECCOMP_ON);
	assert_int_equal(fk_seccomp_parse_mode("off", &m), 0);
	assert_int_equal(m, FK_SECCOMP_OFF);
	assert_int_equal(fk_seccomp_parse_mode("log", &m), 0);
	assert_int_equal(m, FK_SECCOMP_LOG);
	assert_int_equal(fk_seccomp_parse_mode("ON", &m), -EINVAL);
	assert_int_equal(fk_seccomp_parse_mode("", &m), -EINVAL);
	assert_string_equal(fk_seccomp_mode_name(FK_SECCOMP_LOG), "log");
}

/* forkd-vmm's --seccomp: on unless told otherwise; a bad value is named. */
static void test_vmm_option(void **state)
{
	char *plain[] = {"forkd-vmm", "--kernel", "k", NULL};
	char *off[] = {"forkd-vmm", "--kernel", "k", "--seccomp=off", NULL};
	char *log[] = {"forkd-vmm", "--kernel", "k", "--seccomp", "log", NULL};
	char *bad[] = {"forkd-vmm", "--kernel", "k", "--seccomp=strict", NULL};
	struct vmm_config cfg;
	struct fk_err err = {0};

	(void)state;
	assert_int_equal(vmm_config_parse(&cfg, 3, plain, &err), 0);
	assert_int_equal(cfg.seccomp, FK_SECCOMP_ON);
	assert_int_equal(vmm_config_parse(&cfg, 4, off, &err), 0);
	assert_int_equal(cfg.seccomp, FK_SECCOMP_OFF);
	assert_int_equal(vmm_config_parse(&cfg, 5, log, &err), 0);
	assert_int_equal(cfg.seccomp, FK_SECCOMP_LOG);
	assert_int_equal(vmm_config_parse(&cfg, 4, bad, &err), -EINVAL);
	assert_string_equal(err.msg, "--seccomp 'strict': expected on, off or log");
}

static void test_every_role_builds(void **state)
{
	(void)state;
	for (int role = 0; role < FK_SECCOMP_NR_ROLES; role++) {
		for (int mode = FK_SECCOMP_ON; mode <= FK_SECCOMP_LOG; mode++) {
			struct fk_err err = {0};
			scmp_filter_ctx ctx = NULL;

			if (mode == FK_SECCOMP_OFF) {
				assert_int_equal(fk_seccomp_build((enum fk_seccomp_role)role,
								  FK_SECCOMP_OFF, &ctx, &err),
						 -EINVAL);
				assert_null(ctx);
				continue;
			}
			if (fk_seccomp_build((enum fk_seccomp_role)role, (enum fk_seccomp_mode)mode,
					     &ctx, &err) < 0)
				fail_msg("role %s: %s", fk_seccomp_role_name(role), err.msg);
			assert_non_null(ctx);
			seccomp_release(ctx);
		}
	}
	{
		struct fk_err err = {0};
		scmp_filter_ctx ctx;
		assert_int_equal(fk_seccomp_build(FK_SECCOMP_NR_ROLES, FK_SECCOMP_ON, &ctx, &err),
				 -EINVAL);
		assert_non_null(strstr(err.msg, "no thread role"));
	}
}

static void test_off_installs_nothing(void **state)
{
	struct outcome o;

	(void)state;
	run_child(FK_SECCOMP_ROLE_MAIN, FK_SECCOMP_OFF, do_log_mode_runs_it, &o);
	expect_clean_exit(&o);
}

static void test_every_role_denies_inet_socket(void **state)
{
	static const char *names[] = {"main", "vcpu", "helper"};
	struct outcome o;

	(void)state;
	for (int role = 0; role < FK_SECCOMP_NR_ROLES; role++) {
		run_child((enum fk_seccomp_role)role, FK_SECCOMP_ON, do_inet_socket, &o);
		expect_denied(&o, names[role], "socket", SYS_socket);
	}
}

static void test_main_allows_unix_not_inet6(void **state)
{
	struct outcome o;

	(void)state;
	run_child(FK_SECCOMP_ROLE_MAIN, FK_SECCOMP_ON, do_unix_socket_then_inet, &o);
	expect_denied(&o, "main", "socket", SYS_socket);
}

static void test_execve_denied(void **state)
{
	struct outcome o;

	(void)state;
	for (int role = 0; role < FK_SECCOMP_NR_ROLES; role++) {
		run_child((enum fk_seccomp_role)role, FK_SECCOMP_ON, do_execve, &o);
		expect_denied(&o, fk_seccomp_role_name(role), "execve", SYS_execve);
	}
}

static void test_main_threads_and_fork(void **state)
{
	struct outcome o;

	(void)state;
	run_child(FK_SECCOMP_ROLE_MAIN, FK_SECCOMP_ON, do_thread_and_fork, &o);
	expect_clean_exit(&o);
	run_child(FK_SECCOMP_ROLE_MAIN, FK_SECCOMP_ON, do_clone_newuser, &o);
	expect_denied(&o, "main", "clone", SYS_clone);
	run_child(FK_SECCOMP_ROLE_HELPER, FK_SECCOMP_ON, do_helper_fork, &o);
	expect_denied(&o, "helper", "clone", SYS_clone);
}

static void test_no_exec_memory_nor_sigsys_handler(void **state)
{
	struct outcome o;

	(void)state;
	run_child(FK_SECCOMP_ROLE_VCPU, FK_SECCOMP_ON, do_mmap_exec, &o);
	expect_denied(&o, "vcpu", "mmap", SYS_mmap);
	run_child(FK_SECCOMP_ROLE_MAIN, FK_SECCOMP_ON, do_sigsys_handler_change, &o);
	expect_denied(&o, "main", "rt_sigaction", SYS_rt_sigaction);
}

static void test_vcpu_is_narrow(void **state)
{
	struct outcome o;

	(void)state;
	run_child(FK_SECCOMP_ROLE_VCPU, FK_SECCOMP_ON, do_vcpu_open, &o);
	expect_denied(&o, "vcpu", "openat", SYS_openat);
	run_child(FK_SECCOMP_ROLE_VCPU, FK_SECCOMP_ON, do_vcpu_foreign_ioctl, &o);
	expect_denied(&o, "vcpu", "ioctl", SYS_ioctl);
	/* The same open is fine on the main thread. */
	run_child(FK_SECCOMP_ROLE_MAIN, FK_SECCOMP_ON, do_main_open, &o);
	expect_clean_exit(&o);
}

/*
 * Found in the nested host: a VM restored without a control socket made its
 * first JSON object on the fork-notification thread, and jansson opened
 * /dev/urandom there. This process has made no JSON object before (no test
 * above uses jansson), so the child's first one is made under the filter.
 */
static void test_helper_makes_the_first_json_object(void **state)
{
	struct outcome o;

	(void)state;
	run_child(FK_SECCOMP_ROLE_HELPER, FK_SECCOMP_ON, do_helper_json, &o);
	expect_clean_exit(&o);
}

/* An abort() on any thread is still a crash (SIGABRT), not a seccomp exit. */
static void test_abort_stays_a_crash(void **state)
{
	struct outcome o;

	(void)state;
	for (int role = 0; role < FK_SECCOMP_NR_ROLES; role++) {
		run_child((enum fk_seccomp_role)role, FK_SECCOMP_ON, do_abort, &o);
		if (o.exited || o.status != SIGABRT)
			fail_msg("role %s: expected SIGABRT; got %s %d, stderr '%s'",
				 fk_seccomp_role_name(role), o.exited ? "exit" : "signal", o.status,
				 o.err);
	}
}

static void test_log_mode_lets_it_run(void **state)
{
	struct outcome o;

	(void)state;
	for (int role = 0; role < FK_SECCOMP_NR_ROLES; role++) {
		run_child((enum fk_seccomp_role)role, FK_SECCOMP_LOG, do_log_mode_runs_it, &o);
		expect_clean_exit(&o);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_mode),
	    cmocka_unit_test(test_vmm_option),
	    cmocka_unit_test(test_every_role_builds),
	    cmocka_unit_test(test_off_installs_nothing),
	    cmocka_unit_test(test_every_role_denies_inet_socket),
	    cmocka_unit_test(test_main_allows_unix_not_inet6),
	    cmocka_unit_test(test_execve_denied),
	    cmocka_unit_test(test_main_threads_and_fork),
	    cmocka_unit_test(test_no_exec_memory_nor_sigsys_handler),
	    cmocka_unit_test(test_vcpu_is_narrow),
	    cmocka_unit_test(test_helper_makes_the_first_json_object),
	    cmocka_unit_test(test_abort_stays_a_crash),
	    cmocka_unit_test(test_log_mode_lets_it_run),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
