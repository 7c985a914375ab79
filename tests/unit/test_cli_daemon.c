/* SPDX-License-Identifier: MIT */
/*
 * The `forkd` commands that talk to the daemon (src/cli/daemon_cmds.c),
 * against a fake `forkd serve`: a small HTTP/1.1 server on a thread, on a
 * temporary Unix socket, that records each request (method, target, body)
 * and answers with a canned response chosen by its request line. The real
 * CLI binary runs with FORKD_SOCKET pointing at it; the tests check what it
 * sent, what it printed and its exit status. The contract both sides follow:
 * docs/rest-api.md.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_REQUESTS 64
#define MAX_ROUTES   16

/* A canned answer to "METHOD TARGET" (exact, with the query). */
struct route {
	const char *request;
	int status;
	const char *content_type;
	/* application/x-ndjson: each line written on its own; after the first, the fake waits
	 * until the CLI's stdout file has something in it (it must print lines as they arrive). */
	const char *body;
};

struct recorded {
	char method[16];
	char target[1024];
	char *body;
	size_t body_len;
	bool content_length_sent;
	char auth[128]; /* the Authorization header's value */
};

static char dir[256], sock_path[300], out_path[320], err_path[320];
static int listen_fd = -1, tcp_fd = -1, tcp_port;
static pthread_t server_thread, tcp_thread;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct route routes[MAX_ROUTES];
static size_t n_routes;
static struct recorded reqs[MAX_REQUESTS];
static size_t n_reqs;
static bool stream_gate_seen; /* the CLI had printed the first line before the rest was sent */

static const char *forkd_path(void)
{
	const char *p = getenv("FORKD_CLI");
	return p && *p ? p : "build/forkd";
}

static void set_routes(const struct route *r, size_t n)
{
	pthread_mutex_lock(&lock);
	if (n)
		memcpy(routes, r, n * sizeof(*r));
	n_routes = n;
	for (size_t i = 0; i < n_reqs; i++)
		free(reqs[i].body);
	n_reqs = 0;
	stream_gate_seen = false;
	pthread_mutex_unlock(&lock);
}

static void write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

static off_t file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? st.st_size : -1;
}

static const char *reason(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 201:
		return "Created";
	case 204:
		return "No Content";
	case 404:
		return "Not Found";
	case 409:
		return "Conflict";
	default:
		return "Status";
	}
}

static void answer(int fd, const struct route *r)
{
	char head[512];
	const char *body = r ? r->body
			     : "{\"error\":{\"code\":\"not_found\",\"message\":\"no "
			       "such route in the fake daemon\"}}";
	int status = r ? r->status : 404;
	const char *type = r && r->content_type ? r->content_type : "application/json";
	size_t len = strlen(body);

	if (strcmp(type, "application/x-ndjson") == 0 && status == 200) {
		/* No length: the body ends when the connection closes (HTTP/1.1 allows it). */
		snprintf(head, sizeof(head),
			 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nConnection: close\r\n\r\n", status,
			 reason(status), type);
		write_all(fd, head, strlen(head));
		for (const char *line = body; *line;) {
			const char *nl = strchr(line, '\n');
			size_t n = nl ? (size_t)(nl - line + 1) : strlen(line);

			if (line != body) {
				for (int i = 0; i < 500 && file_size(out_path) <= 0; i++)
					usleep(10 * 1000);
				if (file_size(out_path) > 0) {
					pthread_mutex_lock(&lock);
					stream_gate_seen = true;
					pthread_mutex_unlock(&lock);
				}
			}
			write_all(fd, line, n);
			line += n;
		}
		return;
	}
	snprintf(head, sizeof(head),
		 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: "
		 "close\r\n\r\n",
		 status, reason(status), type, status == 204 ? (size_t)0 : len);
	write_all(fd, head, strlen(head));
	if (status != 204)
		write_all(fd, body, len);
}

/* Reads one request (headers, then Content-Length bytes), records it, answers it. */
static void serve_one(int fd)
{
	char *buf = NULL, *end;
	size_t have = 0, cap = 0, head_len, body_len = 0;
	struct recorded rec = {0};
	const struct route *r = NULL;
	char *cl;

	for (;;) {
		if (have + 4096 + 1 > cap) {
			cap = (have + 4096 + 1) * 2;
			buf = realloc(buf, cap);
		}
		ssize_t n = read(fd, buf + have, cap - have - 1);
		if (n <= 0)
			goto out;
		have += (size_t)n;
		buf[have] = '\0';
		if ((end = strstr(buf, "\r\n\r\n")))
			break;
	}
	head_len = (size_t)(end - buf) + 4;
	end[2] = '\0'; /* the headers, ending in one \r\n */
	cl = strcasestr(buf, "\r\nContent-Length:");
	if (cl) {
		body_len = strtoul(cl + 17, NULL, 10);
		rec.content_length_sent = true;
	}
	char *auth = strcasestr(buf, "\r\nAuthorization: ");
	if (auth)
		sscanf(auth + 17, "%127[^\r]", rec.auth);
	if (sscanf(buf, "%15s %1023s", rec.method, rec.target) != 2)
		goto out;
	while (have < head_len + body_len) {
		if (head_len + body_len + 1 > cap) {
			cap = head_len + body_len + 1;
			buf = realloc(buf, cap);
		}
		ssize_t n = read(fd, buf + have, cap - have - 1);
		if (n <= 0)
			break;
		have += (size_t)n;
	}
	rec.body_len = have > head_len ? have - head_len : 0;
	rec.body = malloc(rec.body_len + 1);
	memcpy(rec.body, buf + head_len, rec.body_len);
	rec.body[rec.body_len] = '\0';

	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < n_routes && !r; i++) {
		char line[1100];

		snprintf(line, sizeof(line), "%s %s", rec.method, rec.target);
		if (strcmp(line, routes[i].request) == 0)
			r = &routes[i];
	}
	if (n_reqs < MAX_REQUESTS)
		reqs[n_reqs++] = rec;
	else
		free(rec.body);
	pthread_mutex_unlock(&lock);
	answer(fd, r);
out:
	free(buf);
}

static void *server_main(void *arg)
{
	int fd = *(int *)arg;

	for (;;) {
		int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0)
			return NULL;
		serve_one(c);
		close(c);
	}
}

static int setup(void **state)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};

	(void)state;
	signal(SIGPIPE, SIG_IGN);
	snprintf(dir, sizeof(dir), "%s/forkd-cli-daemon-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(dir))
		return -1;
	snprintf(sock_path, sizeof(sock_path), "%s/forkd.sock", dir);
	snprintf(out_path, sizeof(out_path), "%s/stdout", dir);
	snprintf(err_path, sizeof(err_path), "%s/stderr", dir);
	if (strlen(sock_path) >= sizeof(a.sun_path))
		return -1;
	memcpy(a.sun_path, sock_path, strlen(sock_path) + 1);
	listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(listen_fd, 16) < 0)
		return -1;
	setenv("FORKD_SOCKET", sock_path, 1);
	/* The same fake on TCP, for --url with a token. */
	struct sockaddr_in in = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t in_len = sizeof(in);
	tcp_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (tcp_fd < 0 || bind(tcp_fd, (struct sockaddr *)&in, sizeof(in)) < 0 ||
	    listen(tcp_fd, 16) < 0 || getsockname(tcp_fd, (struct sockaddr *)&in, &in_len) < 0)
		return -1;
	tcp_port = ntohs(in.sin_port);
	if (pthread_create(&tcp_thread, NULL, server_main, &tcp_fd))
		return -1;
	return pthread_create(&server_thread, NULL, server_main, &listen_fd) ? -1 : 0;
}

static int teardown(void **state)
{
	char cmd[300];

	(void)state;
	shutdown(listen_fd, SHUT_RDWR);
	shutdown(tcp_fd, SHUT_RDWR);
	pthread_join(server_thread, NULL);
	pthread_join(tcp_thread, NULL);
	close(listen_fd);
	close(tcp_fd);
	set_routes(NULL, 0);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = calloc(1, 1 << 20);
	size_t n = 0;

	if (f) {
		n = fread(buf, 1, (1 << 20) - 1, f);
		fclose(f);
	}
	buf[n] = '\0';
	if (len)
		*len = n;
	return buf;
}

struct run {
	int status;
	char *out, *err;
	size_t out_len;
};

/* Runs the CLI with argv (NULL-terminated after "forkd"), stdin from `in` (or /dev/null). */
static struct run run_cli(const char *in, const char *first, ...)
{
	const char *args[64] = {"forkd", first};
	struct run r = {0};
	int n = 2, status;
	va_list ap;
	pid_t pid;

	va_start(ap, first);
	while (n < 63 && (args[n] = va_arg(ap, const char *)))
		n++;
	va_end(ap);
	args[n] = NULL;
	unlink(out_path);
	pid = fork();
	if (pid == 0) {
		int o = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int e = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int p[2];

		if (in && pipe(p) == 0) {
			if (write(p[1], in, strlen(in)) < 0)
				_exit(98);
			close(p[1]);
			dup2(p[0], 0);
		} else {
			int null = open("/dev/null", O_RDONLY);
			dup2(null, 0);
		}
		dup2(o, 1);
		dup2(e, 2);
		execv(forkd_path(), (char *const *)args);
		_exit(99);
	}
	waitpid(pid, &status, 0);
	r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	r.out = slurp(out_path, &r.out_len);
	r.err = slurp(err_path, NULL);
	return r;
}

static void run_free(struct run *r)
{
	free(r->out);
	free(r->err);
}

#define RUN(in, ...) run_cli(in, __VA_ARGS__, (const char *)NULL)

static size_t requests(void)
{
	pthread_mutex_lock(&lock);
	size_t n = n_reqs;
	pthread_mutex_unlock(&lock);
	return n;
}

/* The last request: its method and target, and its body parsed as JSON (or NULL). */
static json_t *last_request(const char *method, const char *target)
{
	size_t i = requests() - 1;
	json_t *body;

	assert_true(requests() > 0);
	assert_string_equal(reqs[i].method, method);
	assert_string_equal(reqs[i].target, target);
	body = reqs[i].body_len ? json_loadb(reqs[i].body, reqs[i].body_len, 0, NULL) : NULL;
	return body;
}

static const char *jstr(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));
	return s ? s : "(missing)";
}

#define VM_JSON(id, state, parent, image, snapshot, tag, pause)                                    \
	"{\"id\":\"" id "\",\"state\":\"" state "\",\"pid\":4242,\"parent\":" parent               \
	",\"zygote\":null,\"snapshot\":" snapshot ",\"tag\":" tag ",\"image\":" image              \
	",\"kernel\":null,\"mem_mib\":512,\"cpus\":1,\"created\":\"2026-12-04T17:20:00.123Z\","    \
	"\"branched_at\":null,\"pause_us\":" pause ",\"control_socket\":\"/s/c.sock\","            \
	"\"vsock_socket\":\"/s/v.sock\",\"exit_status\":null}"

static void test_vm_create(void **state)
{
	(void)state;
	struct route r[] = {
	    {"POST /v1/vms", 201, NULL,
	     VM_JSON("vm-1a2b3c4d", "running", "null", "\"py\"", "null", "\"base\"", "null")},
	};
	set_routes(r, 1);

	struct run run = RUN(NULL, "vm", "create", "--image", "py", "--mem", "1024", "--cpus", "2",
			     "--tag", "base");
	assert_int_equal(run.status, 0);
	assert_string_equal(run.out, "vm-1a2b3c4d\n");
	/* stderr is not a terminal: one final line, no spinner. */
	assert_non_null(strstr(run.err, "created vm-1a2b3c4d (running, pid 4242) in "));
	assert_null(strchr(run.err, '\r'));
	assert_ptr_equal(strchr(run.err, '\n'), run.err + strlen(run.err) - 1);
	json_t *b = last_request("POST", "/v1/vms");
	assert_non_null(b);
	assert_string_equal(jstr(b, "image"), "py");
	assert_int_equal(json_integer_value(json_object_get(b, "mem_mib")), 1024);
	assert_int_equal(json_integer_value(json_object_get(b, "cpus")), 2);
	assert_string_equal(jstr(b, "tag"), "base");
	assert_null(json_object_get(b, "kernel"));
	/* no limit asked: none sent, and none shown */
	assert_null(json_object_get(b, "memory_max_mib"));
	assert_null(json_object_get(b, "cpu_max"));
	assert_null(json_object_get(b, "pids_max"));
	assert_null(strstr(run.err, "limits"));
	json_decref(b);
	run_free(&run);

	/* --kernel: sent as an absolute path (the daemon has another working directory). */
	char kernel[400], cwd[300];
	snprintf(kernel, sizeof(kernel), "%s/vmlinux", dir);
	fclose(fopen(kernel, "w"));
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir(dir), 0);
	run =
	    RUN(NULL, "vm", "create", "--kernel", "vmlinux", "--append", "console=ttyS0", "--json");
	assert_int_equal(chdir(cwd), 0);
	assert_int_equal(run.status, 0);
	json_t *printed = json_loads(run.out, 0, NULL);
	assert_non_null(printed);
	assert_string_equal(jstr(printed, "id"), "vm-1a2b3c4d");
	json_decref(printed);
	b = last_request("POST", "/v1/vms");
	char *real = realpath(kernel, NULL);
	assert_string_equal(jstr(b, "kernel"), real);
	free(real);
	assert_string_equal(jstr(b, "append"), "console=ttyS0");
	assert_null(json_object_get(b, "image"));
	json_decref(b);
	run_free(&run);
}

/* A VM object with limits (the daemon's shape: docs/rest-api.md). */
#define VM_LIMITS_JSON(id, parent, snapshot, limits)                                               \
	"{\"id\":\"" id "\",\"state\":\"running\",\"pid\":4242,\"parent\":" parent                 \
	",\"zygote\":null,\"snapshot\":" snapshot ",\"tag\":null,\"image\":null,\"kernel\":"       \
	"\"/k\",\"mem_mib\":512,\"cpus\":1,\"created\":\"2026-12-04T17:20:00.123Z\","              \
	"\"branched_at\":null,\"pause_us\":null,\"control_socket\":\"/s/c.sock\","                 \
	"\"vsock_socket\":null,\"exit_status\":null,\"limits\":" limits "}"
#define LIMITS_ALL                                                                                 \
	"{\"memory_max_mib\":256,\"cpu_max\":\"50000/100000\",\"pids_max\":64,\"cgroup\":"         \
	"\"/sys/fs/cgroup/forkd/vm-00000001\"}"
#define LIMITS_SPAWN                                                                               \
	"{\"memory_max_mib\":1024,\"cpu_max\":\"20000/50000\",\"pids_max\":null,\"cgroup\":"       \
	"\"/sys/fs/cgroup/forkd/vm-0000000a\"}"

#define VM_A		VM_LIMITS_JSON("vm-00000001", "null", "null", LIMITS_ALL)
#define VM_B		VM_LIMITS_JSON("vm-00000002", "\"vm-00000001\"", "null", LIMITS_ALL)
#define VM_PLAIN	VM_JSON("vm-00000003", "running", "null", "\"py\"", "null", "null", "null")
#define NODE(depth, vm) "{\"depth\":" #depth ",\"last_sibling\":true,\"vm\":" vm "}"

/* --memory-max, --cpu-max, --pids-max on vm create and spawn TAG: checked here, sent as the
 * contract's fields, and the VM's limits shown by create, spawn, ls and tree. */
static void test_limits(void **state)
{
	(void)state;
	struct route r[] = {
	    {"POST /v1/vms", 201, NULL, VM_LIMITS_JSON("vm-00000001", "null", "null", LIMITS_ALL)},
	    {"POST /v1/snapshots/s1/spawn", 201, NULL,
	     "{\"vms\":[" VM_LIMITS_JSON("vm-0000000a", "null", "\"s1\"", LIMITS_SPAWN) "]}"},
	    {"GET /v1/vms", 200, NULL, "{\"vms\":[" VM_A "," VM_B "," VM_PLAIN "]}"},
	    {"GET /v1/tree", 200, NULL, "{\"tree\":[" NODE(0, VM_A) "," NODE(1, VM_B) "]}"},
	    {"POST /v1/snapshots/nocg/spawn", 501, NULL,
	     "{\"error\":{\"code\":\"not_implemented\",\"message\":\"cgroup limits: "
	     "/sys/fs/cgroup is not cgroup v2 (tmpfs)\"}}"},
	};
	set_routes(r, 5);

	struct run run = RUN(NULL, "vm", "create", "--kernel", "/k", "--memory-max", "256M",
			     "--cpu-max", "50000", "--pids-max", "64");
	assert_int_equal(run.status, 0);
	assert_string_equal(run.out, "vm-00000001\n");
	assert_non_null(strstr(run.err, "; limits: mem 256M, cpu 50000/100000, pids 64\n"));
	json_t *b = last_request("POST", "/v1/vms");
	assert_int_equal(json_integer_value(json_object_get(b, "memory_max_mib")), 256);
	assert_string_equal(jstr(b, "cpu_max"), "50000");
	assert_int_equal(json_integer_value(json_object_get(b, "pids_max")), 64);
	json_decref(b);
	run_free(&run);

	/* Sizes as forkd-vmm takes them, sent in MiB; only the asked limit is sent. */
	run = RUN(NULL, "vm", "create", "--kernel", "/k", "--memory-max", "1G");
	assert_int_equal(run.status, 0);
	b = last_request("POST", "/v1/vms");
	assert_int_equal(json_integer_value(json_object_get(b, "memory_max_mib")), 1024);
	assert_null(json_object_get(b, "cpu_max"));
	assert_null(json_object_get(b, "pids_max"));
	json_decref(b);
	run_free(&run);
	run = RUN(NULL, "vm", "create", "--kernel", "/k", "--memory-max", "16777216", "--cpu-max",
		  "20000/50000");
	assert_int_equal(run.status, 0);
	b = last_request("POST", "/v1/vms");
	assert_int_equal(json_integer_value(json_object_get(b, "memory_max_mib")), 16);
	assert_string_equal(jstr(b, "cpu_max"), "20000/50000");
	json_decref(b);
	run_free(&run);

	/* spawn TAG: the limits go along; a --cpu-max before the tag (its value has a '/') still
	 * asks the daemon rather than a local snapshot directory. */
	run = RUN(NULL, "spawn", "--cpu-max", "20000/50000", "s1", "-n", "1", "--memory-max",
		  "1024M");
	assert_int_equal(run.status, 0);
	assert_string_equal(run.out, "vm-0000000a\n");
	assert_non_null(strstr(run.err, "spawned 1 VMs from s1"));
	assert_non_null(strstr(run.err, "; limits: mem 1G, cpu 20000/50000\n"));
	b = last_request("POST", "/v1/snapshots/s1/spawn");
	assert_int_equal(json_integer_value(json_object_get(b, "n")), 1);
	assert_int_equal(json_integer_value(json_object_get(b, "memory_max_mib")), 1024);
	assert_string_equal(jstr(b, "cpu_max"), "20000/50000");
	assert_null(json_object_get(b, "pids_max"));
	json_decref(b);
	run_free(&run);

	/* ls: a LIMITS column, "-" for a VM without a cgroup; a BRANCH child shows its family's. */
	run = RUN(NULL, "vm", "ls");
	assert_int_equal(run.status, 0);
	assert_non_null(strstr(run.out, "LIMITS\n"));
	char *line = strstr(run.out, "vm-00000002");
	assert_non_null(line);
	assert_non_null(strstr(line, "mem 256M, cpu 50000/100000, pids 64\n"));
	line = strstr(run.out, "vm-00000003");
	assert_non_null(line);
	assert_non_null(strstr(line, "image py"));
	assert_non_null(strstr(line, "  -\n"));
	run_free(&run);

	run = RUN(NULL, "tree");
	assert_int_equal(run.status, 0);
	assert_string_equal(run.out,
			    "vm-00000001  running  kernel /k  limits: mem 256M, cpu 50000/100000, "
			    "pids 64\n"
			    "└─ vm-00000002  running  kernel /k  limits: mem 256M, cpu "
			    "50000/100000, pids 64\n");
	run_free(&run);

	/* A daemon without cgroup v2: its 501 and message, exit status 1. */
	run = RUN(NULL, "spawn", "nocg", "-n", "1", "--pids-max", "8");
	assert_int_equal(run.status, 1);
	assert_non_null(strstr(run.err, "/sys/fs/cgroup is not cgroup v2 (tmpfs) (not_implemented "
					"501)"));
	run_free(&run);

	/* Bad values: exit 2 with the flag, the value and what is expected; nothing sent. */
	static const struct {
		const char *cmd, *flag, *value, *expected;
	} bad[] = {
	    {"create", "--memory-max", "100", "whole number of MiB from 16M to 1T"},
	    {"create", "--memory-max", "1536K", "whole number of MiB"},
	    {"create", "--memory-max", "8M", "from 16M to 1T"},
	    {"create", "--memory-max", "2T", "from 16M to 1T"},
	    {"create", "--memory-max", "lots", "such as 256M or 1G"},
	    {"create", "--cpu-max", "500", "QUOTA[/PERIOD] in microseconds"},
	    {"create", "--cpu-max", "50000/2000000", "period 1000 to 1000000"},
	    {"create", "--cpu-max", "half", "quota at least 1000"},
	    {"create", "--pids-max", "0", "1 to 4194304"},
	    {"create", "--pids-max", "4194305", "1 to 4194304"},
	    {"spawn", "--pids-max", "x", "1 to 4194304"},
	    {"spawn", "--cpu-max", "50000/", "QUOTA[/PERIOD]"},
	    {"spawn", "--memory-max", "0", "from 16M"},
	};
	size_t before = requests();
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char want[160];

		if (strcmp(bad[i].cmd, "create") == 0)
			run =
			    RUN(NULL, "vm", "create", "--kernel", "/k", bad[i].flag, bad[i].value);
		else
			run = RUN(NULL, "spawn", "s1", "-n", "1", bad[i].flag, bad[i].value);
		snprintf(want, sizeof(want), "%s '%s': expected", bad[i].flag, bad[i].value);
		if (run.status != 2 || !strstr(run.err, want) || !strstr(run.err, bad[i].expected))
			fail_msg("%s %s '%s': exit %d, expected 2 and '%s ... %s' (stderr: %s)",
				 bad[i].cmd, bad[i].flag, bad[i].value, run.status, want,
				 bad[i].expected, run.err);
		assert_non_null(strstr(run.err, bad[i].cmd[0] == 'c' ? "forkd: vm create --"
								     : "forkd: spawn --"));
		run_free(&run);
	}
	run = RUN(NULL, "vm", "create", "--kernel", "/k", "--pids-max");
	assert_int_equal(run.status, 2);
	assert_non_null(strstr(run.err, "--pids-max: expected a value after it"));
	run_free(&run);
	assert_int_equal(requests(), before);
}

static void test_vm_ls_rm(void **state)
{
	(void)state;
	struct route r[] = {
	    {"GET /v1/vms", 200, NULL,
	     "{\"vms\":[" VM_JSON("vm-00000001", "running", "null", "\"py\"", "null", "\"base\"",
				  "null") "," VM_JSON("vm-00000002", "paused", "\"vm-00000001\"",
						      "\"py\"", "null", "null", "812") "]}"},
	    {"DELETE /v1/vms/vm-00000001?cascade=true", 200, NULL,
	     "{\"removed\":[\"vm-00000002\",\"vm-00000001\"]}"},
	    {"DELETE /v1/vms/vm-00000002", 200, NULL, "{\"removed\":[\"vm-00000002\"]}"},
	};
	set_routes(r, 3);

	struct run run = RUN(NULL, "vm", "ls");
	assert_int_equal(run.status, 0);
	assert_non_null(strstr(run.out, "ID"));
	assert_non_null(strstr(run.out, "vm-00000001  running"));
	assert_non_null(strstr(run.out, "vm-00000002  paused"));
	assert_non_null(strstr(run.out, "image py"));
	(void)last_request("GET", "/v1/vms");
	run_free(&run);

	run = RUN(NULL, "vm", "ls", "--json");
	assert_int_equal(run.status, 0);
	json_t *j = json_loads(run.out, 0, NULL);
	assert_int_equal(json_array_size(json_object_get(j, "vms")), 2);
	json_decref(j);
	run_free(&run);

	run = RUN(NULL, "vm", "rm", "vm-00000001", "--cascade");
	assert_int_equal(run.status, 0);
	assert_string_equal(run.out, "removed vm-00000002\nremoved vm-00000001\n");
	assert_null(last_request("DELETE", "/v1/vms/vm-00000001?cascade=true"));
	run_free(&run);

	/* --daemon PATH wins over FORKD_SOCKET. */
	setenv("FORKD_SOCKET", "/nonexistent/forkd.sock", 1);
	run = RUN(NULL, "vm", "rm", "--daemon", sock_path, "vm-00000002");
	setenv("FORKD_SOCKET", sock_path, 1);
	assert_int_equal(run.status, 0);
	assert_string_equal(run.out, "removed vm-00000002\n");
	run_free(&run);
}

static void test_branch_snapshot_spawn(void **state)
{
	(void)state;
	struct route r[] = {
	    {"POST /v1/vms/vm-00000001/branch", 201, NULL,
	     "{\"zygote\":\"zy-00000001\",\"pause_us\":812,\"children\":[" VM_JSON(
		 "vm-00000002", "running", "\"vm-00000001\"", "null", "null", "null",
		 "812") "," VM_JSON("vm-00000003", "running", "\"vm-00000001\"", "null", "null",
				    "null", "812") "],\"snapshot\":{\"tag\":\"t1\",\"state\":"
						   "\"writing\",\"path\":\"/s/t1\",\"parent_vm\":"
						   "\"vm-00000001\",\"created\":\"x\",\"pause_us\":"
						   "812}}"},
	    {"POST /v1/vms/vm-00000001/snapshot", 201, NULL,
	     "{\"tag\":\"s1\",\"state\":\"ready\",\"path\":\"/var/lib/forkd/snapshots/s1\","
	     "\"parent_vm\":\"vm-00000001\",\"created\":\"2026-12-04T17:21:00Z\",\"pause_us\":"
	     "15000}"},
	    {"POST /v1/snapshots/s1/spawn", 201, NULL,
	     "{\"vms\":[" VM_JSON("vm-0000000a", "running", "null", "null", "\"s1\"", "null",
				  "null") "," VM_JSON("vm-0000000b", "running", "null", "null",
						      "\"s1\"", "null", "null") "]}"},
	    {"GET /v1/snapshots", 200, NULL,
	     "{\"snapshots\":[{\"tag\":\"s1\",\"state\":\"ready\",\"path\":\"/s/s1\","
	     "\"parent_vm\":\"vm-00000001\",\"created\":\"2026-12-04T17:21:00Z\",\"pause_us\":"
	     "15000}]}"},
	    {"DELETE /v1/snapshots/s1?cascade=true", 200, NULL,
	     "{\"removed\":[\"vm-0000000a\",\"vm-0000000b\",\"s1\"]}"},
	};
	set_routes(r, 5);

	struct run run = RUN(NULL, "branch", "vm-00000001", "-n", "2", "--persist", "--tag", "t1");
	assert_int_equal(run.status, 0);
	assert_string_equal(run.out, "vm-00000002\nvm-00000003\n");
	assert_non_null(strstr(run.err, "branched vm-00000001 into 2 (zygote zy-00000001, "
					"paused 0.8 ms)"));
	assert_non_null(strstr(run.err, "snapshot t1 writing"));
	json_t *b = last_request("POST", "/v1/vms/vm-00000001/branch");
	assert_int_equal(json_integer_value(json_object_get(b, "n")), 2);
	assert_true(json_is_true(json_object_get(b, "persist")));
	assert_true(json_is_true(json_object_get(b, "wait")));
	assert_string_equal(jstr(b, "tag"), "t1");
	json_decref(b);
	run_free(&run);

	run = RUN(NULL, "branch", "vm-00000001", "--no-wait", "--json");
	assert_int_equal(run.status, 0);
	json_t *j = json_loads(run.out, 0, NULL);
	assert_string_equal(jstr(j, "zygote"), "zy-00000001");
	json_decref(j);
	b = last_request("POST", "/v1/vms/vm-00000001/branch");
	assert_int_equal(json_integer_value(json_object_get(b, "n")), 1);
	assert_true(json_is_false(json_object_get(b, "persist")));
	assert_true(json_is_false(json_object_get(b, "wait")));
	assert_null(json_object_get(b, "tag"));
	json_decref(b);
	run_free(&run);

	run = RUN(NULL, "snapshot", "vm-00000001", "--tag", "s1");
	assert_int_equal(run.status, 0);
	assert_non_null(strstr(run.out, "s1"));
	assert_non_null(strstr(run.out, "15.0 ms"));
	b = last_request("POST", "/v1/vms/vm-00000001/snapshot");
	assert_string_equal(jstr(b, "tag"), "s1");
	assert_int_equal(json_object_size(b), 1);
	json_decref(b);
	run_free(&run);

	/* A tag (not a directory here): the daemon spawns. */
	run = RUN(NULL, "spawn", "s1", "-n", "2");
	assert_int_equal(run.status, 0);
	assert_string_equal(run.out, "vm-0000000a\nvm-0000000b\n");
	assert_non_null(strstr(run.err, "spawned 2 VMs from s1"));
	b = last_request("POST", "/v1/snapshots/s1/spawn");
	assert_int_equal(json_integer_value(json_object_get(b, "n")), 2);
	json_decref(b);
	run_free(&run);

	run = RUN(NULL, "snapshots");
	assert_int_equal(run.status, 0);
	assert_non_null(strstr(run.out, "s1"));
	assert_non_null(strstr(run.out, "ready"));
	(void)last_request("GET", "/v1/snapshots");
	run_free(&run);

	run = RUN(NULL, "snapshots", "rm", "s1", "--cascade");
	assert_int_equal(run.status, 0);
	assert_string_equal(run.out, "removed vm-0000000a\nremoved vm-0000000b\nremoved s1\n");
	(void)last_request("DELETE", "/v1/snapshots/s1?cascade=true");
	run_free(&run);

	/* An existing directory (or --out) keeps the local spawn: no request. */
	size_t before = requests();
	run = RUN(NULL, "spawn", dir, "-n", "1");
	assert_int_equal(run.status, 2);
	assert_non_null(strstr(run.err, "expected --out DIR"));
	assert_int_equal(requests(), before);
	run_free(&run);
}

static void test_tree(void **state)
{
	(void)state;
	struct route r[] = {
	    {"GET /v1/tree", 200, NULL,
	     "{\"tree\":["
	     "{\"depth\":0,\"last_sibling\":true,\"vm\":" VM_JSON(
		 "vm-00000001", "running", "null", "\"py\"", "null", "\"base\"",
		 "null") "},"
			 "{\"depth\":1,\"last_sibling\":false,\"vm\":" VM_JSON(
			     "vm-00000002", "running", "\"vm-00000001\"", "\"py\"", "null", "null",
			     "812") "},"
				    "{\"depth\":2,\"last_sibling\":true,\"vm\":" VM_JSON(
					"vm-00000003", "paused", "\"vm-00000002\"", "\"py\"",
					"null", "\"w\"",
					"460") "},"
					       "{\"depth\":1,\"last_sibling\":true,\"vm\":" VM_JSON(
						   "vm-00000004", "exited", "\"vm-00000001\"",
						   "\"py\"", "null", "null",
						   "1234") "},"
							   "{\"depth\":2,\"last_sibling\":false,"
							   "\"vm\":" VM_JSON(
							       "vm-00000005", "running", "null",
							       "null", "\"s1\"", "null",
							       "300") "},"
								      "{\"depth\":2,\"last_"
								      "sibling\":true,"
								      "\"vm\":" VM_JSON(
									  "vm-00000006", "running",
									  "null", "null", "\"s1\"",
									  "null", "300") "}"
											 "]}"},
	};
	set_routes(r, 1);

	struct run run = RUN(NULL, "tree");
	assert_int_equal(run.status, 0);
	assert_string_equal(run.out, "vm-00000001  running  tag base  image py\n"
				     "├─ vm-00000002  running  paused 0.8 ms  image py\n"
				     "│  └─ vm-00000003  paused  tag w  paused 0.5 ms  image py\n"
				     "└─ vm-00000004  exited  paused 1.2 ms  image py\n"
				     "   ├─ vm-00000005  running  paused 0.3 ms  snapshot s1\n"
				     "   └─ vm-00000006  running  paused 0.3 ms  snapshot s1\n");
	(void)last_request("GET", "/v1/tree");
	run_free(&run);

	run = RUN(NULL, "tree", "--json");
	assert_int_equal(run.status, 0);
	json_t *j = json_loads(run.out, 0, NULL);
	assert_int_equal(json_array_size(json_object_get(j, "tree")), 6);
	json_decref(j);
	run_free(&run);
}

static void test_errors(void **state)
{
	(void)state;
	struct route r[] = {
	    {"DELETE /v1/vms/vm-00000001", 409, NULL,
	     "{\"error\":{\"code\":\"conflict\",\"message\":\"vm-00000001 has 2 children; delete "
	     "with cascade=true\"}}"},
	    {"GET /v1/vms", 500, "text/plain", "upstream exploded"},
	};
	set_routes(r, 2);

	/* The daemon's error object: its message, and exit status 1. */
	struct run run = RUN(NULL, "vm", "rm", "vm-00000001");
	assert_int_equal(run.status, 1);
	assert_non_null(strstr(run.err, "forkd vm rm: vm-00000001 has 2 children; delete with "
					"cascade=true (conflict 409)"));
	assert_non_null(strstr(run.err, "--cascade removes vm-00000001"));
	assert_string_equal(run.out, "");
	run_free(&run);
	run = RUN(NULL, "vm", "ls");
	assert_int_equal(run.status, 1);
	assert_non_null(strstr(run.err, "HTTP 500 without an error object: upstream exploded"));
	run_free(&run);
	run = RUN(NULL, "tree"); /* the fake's own 404 */
	assert_int_equal(run.status, 1);
	assert_non_null(strstr(run.err, "no such route in the fake daemon (not_found 404)"));
	run_free(&run);

	/* No daemon: the socket is missing, or nobody listens on it. */
	set_routes(NULL, 0);
	setenv("FORKD_SOCKET", "/nonexistent/forkd.sock", 1);
	run = RUN(NULL, "vm", "ls");
	assert_int_equal(run.status, 2);
	assert_non_null(strstr(run.err, "cannot reach the forkd daemon"));
	assert_non_null(strstr(run.err, "/nonexistent/forkd.sock"));
	assert_non_null(strstr(run.err, "forkd serve"));
	run_free(&run);
	char stale[400];
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(stale, sizeof(stale), "%s/stale.sock", dir);
	memcpy(a.sun_path, stale, strlen(stale) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	close(fd);
	setenv("FORKD_SOCKET", stale, 1);
	run = RUN(NULL, "tree");
	assert_int_equal(run.status, 2);
	assert_non_null(strstr(run.err, "cannot reach the forkd daemon at"));
	assert_non_null(strstr(run.err, stale));
	assert_non_null(strstr(run.err, "nobody listens"));
	run_free(&run);
	setenv("FORKD_SOCKET", sock_path, 1);

	/* Bad usage: exit 2, nothing sent. */
	static const char *const bad[][8] = {
	    {"vm", "create", NULL},
	    {"vm", "create", "--image", "py", "--kernel", "/k", NULL},
	    {"vm", "create", "--image", "py", "--append", "x", NULL},
	    {"vm", "create", "--image", "py", "--cpus", "0", NULL},
	    {"vm", "create", "--image", "py", "--tag", ".hidden", NULL},
	    {"vm", "create", "--image", NULL},
	    {"vm", "ls", "extra", NULL},
	    {"vm", "rm", NULL},
	    {"vm", "rm", "not-an-id", NULL},
	    {"branch", "vm-00000001", "--bogus", NULL},
	    {"branch", "vm-00000001", "-n", "65", NULL},
	    {"branch", "vm-00000001", "-n", "0", NULL},
	    {"branch", "vm-00000001", "--persist", NULL},
	    {"branch", "vm-0000000z", NULL},
	    {"snapshot", "vm-00000001", NULL},
	    {"spawn", "s1", NULL},
	    {"snapshots", "frob", NULL},
	    {"tree", "extra", NULL},
	    {"tree", "--daemon", NULL},
	    {"tree", "--url", "ftp://x", "--token-file", "/dev/null", NULL},
	    {"tree", "--url", "http://127.0.0.1:1", NULL},
	    {"exec", "vm-00000001", "--gid", "0", "--", "true", NULL},
	    {"exec", "vm-00000001", NULL},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *const *v = bad[i];
		run = run_cli(NULL, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]);
		if (run.status != 2)
			fail_msg("forkd %s %s %s: exit %d, expected 2 (stderr: %s)", v[0],
				 v[1] ? v[1] : "", v[1] && v[2] ? v[2] : "", run.status, run.err);
		assert_non_null(strstr(run.err, "usage:"));
		run_free(&run);
	}
	assert_int_equal(requests(), 0);
}

static void test_exec_stream(void **state)
{
	(void)state;
	/* "hello\n", "oops\n", bytes 00 01 ff, "bye\n" */
	struct route r[] = {
	    {"POST /v1/vms/vm-00000001/exec", 200, "application/x-ndjson",
	     "{\"stdout\":\"aGVsbG8K\"}\n{\"stderr\":\"b29wcwo=\"}\n{\"stdout\":\"AAH/\"}\n"
	     "{\"stdout\":\"YnllCg==\"}\n{\"exit\":3}\n"},
	    {"POST /v1/vms/vm-00000002/exec", 200, "application/x-ndjson",
	     "{\"stdout\":\"aGVsbG8K\"}\n{\"signal\":9}\n"},
	    {"POST /v1/vms/vm-00000003/exec", 200, "application/x-ndjson",
	     "{\"error\":{\"code\":\"not_found\",\"message\":\"nosuch: not found\"}}\n"},
	    {"POST /v1/vms/vm-00000005/exec", 200, "application/x-ndjson",
	     "{\"stdout\":\"aGVsbG8K\"}\n{\"signal\":9,\"timed_out\":true}\n"},
	    {"POST /v1/vms/vm-00000004/exec", 404, NULL,
	     "{\"error\":{\"code\":\"not_found\",\"message\":\"no VM vm-00000004\"}}"},
	};
	set_routes(r, 5);

	struct run run = RUN(NULL, "exec", "vm-00000001", "--env", "A=b c", "--cwd", "/tmp",
			     "--timeout", "5000", "--", "sh", "-c", "echo hi; exit 3");
	assert_int_equal(run.status, 3);
	assert_int_equal(run.out_len, 13);
	assert_memory_equal(run.out,
			    "hello\n\x00\x01\xff"
			    "bye\n",
			    13);
	assert_string_equal(run.err, "oops\n");
	pthread_mutex_lock(&lock);
	assert_true(stream_gate_seen); /* printed the first line before the rest came */
	pthread_mutex_unlock(&lock);
	json_t *b = last_request("POST", "/v1/vms/vm-00000001/exec");
	json_t *argv = json_object_get(b, "argv");
	assert_int_equal(json_array_size(argv), 3);
	assert_string_equal(json_string_value(json_array_get(argv, 2)), "echo hi; exit 3");
	assert_string_equal(jstr(json_object_get(b, "env"), "A"), "b c");
	assert_string_equal(jstr(b, "cwd"), "/tmp");
	assert_int_equal(json_integer_value(json_object_get(b, "timeout_ms")), 5000);
	assert_null(json_object_get(b, "stdin"));
	json_decref(b);
	run_free(&run);

	/* -i: stdin read whole and sent as base64; a signal is 128+N. */
	run = RUN("ping\n", "exec", "vm-00000002", "-i", "--", "cat");
	assert_int_equal(run.status, 128 + 9);
	assert_string_equal(run.out, "hello\n");
	b = last_request("POST", "/v1/vms/vm-00000002/exec");
	assert_string_equal(jstr(b, "stdin"), "cGluZwo=");
	json_decref(b);
	run_free(&run);

	/* The command did not run: 125 and the reason. */
	run = RUN(NULL, "exec", "vm-00000003", "--", "nosuch");
	assert_int_equal(run.status, 125);
	assert_non_null(strstr(run.err, "nosuch: not found (not_found)"));
	run_free(&run);
	run = RUN(NULL, "exec", "vm-00000005", "--timeout", "100", "--", "sleep", "9");
	assert_int_equal(run.status, 124);
	assert_non_null(strstr(run.err, "timed out"));
	run_free(&run);
	run = RUN(NULL, "exec", "vm-00000004", "--", "true");
	assert_int_equal(run.status, 125);
	assert_non_null(strstr(run.err, "no VM vm-00000004 (not_found 404)"));
	run_free(&run);
}

static void test_cp(void **state)
{
	(void)state;
	struct route r[] = {
	    {"PUT /v1/vms/vm-00000001/files?path=%2Froot%2Fdata%20file.txt&mode=0640", 204, NULL,
	     ""},
	    {"GET /v1/vms/vm-00000001/files?path=%2Fetc%2Fhostname", 200,
	     "application/octet-stream", "child-3\n"},
	    {"GET /v1/vms/vm-00000001/files?path=%2Fmissing", 404, NULL,
	     "{\"error\":{\"code\":\"not_found\",\"message\":\"/missing: no such file\"}}"},
	};
	set_routes(r, 3);

	char local[400], back[400], missing[400];
	snprintf(local, sizeof(local), "%s/local.txt", dir);
	snprintf(back, sizeof(back), "%s/back.txt", dir);
	snprintf(missing, sizeof(missing), "%s/missing.txt", dir);
	FILE *f = fopen(local, "w");
	fputs("uploaded through the daemon\n", f);
	fclose(f);
	chmod(local, 0640);

	struct run run = RUN(NULL, "cp", local, "vm-00000001:/root/data file.txt");
	assert_int_equal(run.status, 0);
	assert_string_equal(run.out, "{\"bytes\":28}\n");
	(void)last_request("PUT",
			   "/v1/vms/vm-00000001/files?path=%2Froot%2Fdata%20file.txt&mode=0640");
	assert_true(reqs[n_reqs - 1].content_length_sent);
	assert_int_equal(reqs[n_reqs - 1].body_len, 28);
	assert_memory_equal(reqs[n_reqs - 1].body, "uploaded through the daemon\n", 28);
	run_free(&run);

	run = RUN(NULL, "cp", "vm-00000001:/etc/hostname", back);
	assert_int_equal(run.status, 0);
	assert_string_equal(run.out, "{\"bytes\":8}\n");
	char *got = slurp(back, NULL);
	assert_string_equal(got, "child-3\n");
	free(got);
	run_free(&run);

	run = RUN(NULL, "cp", "vm-00000001:/missing", missing);
	assert_int_equal(run.status, 1);
	assert_non_null(strstr(run.err, "/missing: no such file (not_found 404)"));
	assert_int_equal(access(missing, F_OK), -1);
	run_free(&run);
}

static void test_tcp_token(void **state)
{
	(void)state;
	struct route r[] = {{"GET /v1/tree", 200, NULL, "{\"tree\":[]}"}};
	set_routes(r, 1);

	char token[400], url[64], url_slash[64];
	snprintf(token, sizeof(token), "%s/token", dir);
	FILE *f = fopen(token, "w");
	fputs("s3cret-token-0123456789\n", f);
	fclose(f);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", tcp_port);
	snprintf(url_slash, sizeof(url_slash), "http://127.0.0.1:%d/", tcp_port);

	/* The socket is not used with --url; the token goes as a bearer token. */
	setenv("FORKD_SOCKET", "/nonexistent/forkd.sock", 1);
	struct run run = RUN(NULL, "tree", "--url", url, "--token-file", token, "--json");
	assert_int_equal(run.status, 0);
	assert_non_null(strstr(run.out, "\"tree\""));
	assert_null(last_request("GET", "/v1/tree"));
	assert_string_equal(reqs[n_reqs - 1].auth, "Bearer s3cret-token-0123456789");
	run_free(&run);
	run = RUN(NULL, "tree", "--url=", "--token-file", token);
	assert_int_equal(run.status, 2);
	run_free(&run);
	char url_arg[80];
	snprintf(url_arg, sizeof(url_arg), "--url=%s", url_slash);
	run = RUN(NULL, "tree", url_arg, "--token-file", token);
	assert_int_equal(run.status, 0);
	assert_null(last_request("GET", "/v1/tree"));
	run_free(&run);
	setenv("FORKD_SOCKET", sock_path, 1);

	/* Nobody on that port. */
	run = RUN(NULL, "tree", "--url", "http://127.0.0.1:1", "--token-file", token);
	assert_int_equal(run.status, 2);
	assert_non_null(strstr(run.err, "cannot reach the forkd daemon at http://127.0.0.1:1"));
	run_free(&run);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_vm_create),	cmocka_unit_test(test_limits),
	    cmocka_unit_test(test_vm_ls_rm),	cmocka_unit_test(test_branch_snapshot_spawn),
	    cmocka_unit_test(test_tree),	cmocka_unit_test(test_errors),
	    cmocka_unit_test(test_exec_stream), cmocka_unit_test(test_cp),
	    cmocka_unit_test(test_tcp_token),
	};
	return cmocka_run_group_tests_name("forkd CLI against a fake daemon", tests, setup,
					   teardown);
}
