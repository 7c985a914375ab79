/* SPDX-License-Identifier: MIT */
/* Parsing and validating what the host sends (request.h): pure, so it is unit-tested on the host.
 */
#include "request.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "util/json_kind.h"

static int fail(char *why, size_t why_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *why, size_t why_len, const char *fmt, ...)
{
	va_list ap;

	if (why && why_len) {
		va_start(ap, fmt);
		vsnprintf(why, why_len, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

/* Rejects keys outside `allowed` (NULL-terminated): a misspelt field must not be ignored. */
static int check_keys(const char *what, json_t *obj, const char *const *allowed, char *why,
		      size_t why_len)
{
	const char *key;
	json_t *value;

	json_object_foreach(obj, key, value)
	{
		size_t i;
		for (i = 0; allowed[i]; i++)
			if (strcmp(key, allowed[i]) == 0)
				break;
		if (!allowed[i])
			return fail(why, why_len, "%s: unknown field \"%.64s\"", what, key);
	}
	return 0;
}

static int get_string(const char *what, json_t *obj, const char *key, bool required,
		      const char **out, char *why, size_t why_len)
{
	json_t *v = json_object_get(obj, key);

	*out = NULL;
	if (!v)
		return required
			   ? fail(why, why_len, "%s: missing field \"%s\" (a string)", what, key)
			   : 0;
	if (!json_is_string(v))
		return fail(why, why_len, "%s: field \"%s\" is %s (expected a string)", what, key,
			    fk_json_kind(v));
	*out = json_string_value(v);
	return 0;
}

static int get_uint(const char *what, json_t *obj, const char *key, bool required, uint64_t max,
		    bool *present, uint64_t *out, char *why, size_t why_len)
{
	json_t *v = json_object_get(obj, key);

	*present = v != NULL;
	if (!v)
		return required
			   ? fail(why, why_len, "%s: missing field \"%s\" (an integer)", what, key)
			   : 0;
	if (!json_is_integer(v))
		return fail(why, why_len, "%s: field \"%s\" is %s (expected an integer 0..%llu)",
			    what, key, fk_json_kind(v), (unsigned long long)max);
	json_int_t n = json_integer_value(v);
	if (n < 0 || (uint64_t)n > max)
		return fail(why, why_len, "%s: field \"%s\" is %lld (expected 0..%llu)", what, key,
			    (long long)n, (unsigned long long)max);
	*out = (uint64_t)n;
	return 0;
}

static int get_bool(const char *what, json_t *obj, const char *key, bool *out, char *why,
		    size_t why_len)
{
	json_t *v = json_object_get(obj, key);

	*out = false;
	if (!v)
		return 0;
	if (!json_is_boolean(v))
		return fail(why, why_len, "%s: field \"%s\" is %s (expected true or false)", what,
			    key, fk_json_kind(v));
	*out = json_is_true(v);
	return 0;
}

static int get_path(const char *what, json_t *obj, const char **out, char *why, size_t why_len)
{
	int ret = get_string(what, obj, "path", true, out, why, why_len);

	if (ret < 0)
		return ret;
	if ((*out)[0] != '/')
		return fail(why, why_len, "%s: path \"%.200s\" is not absolute", what, *out);
	if (strlen(*out) >= PATH_MAX)
		return fail(why, why_len, "%s: path of %zu bytes (at most %d)", what, strlen(*out),
			    PATH_MAX - 1);
	return 0;
}

static int parse_exec(json_t *root, struct exec_request *x, char *why, size_t why_len)
{
	static const char *const keys[] = {"op",  "argv",	"env",	 "cwd", "uid",
					   "gid", "timeout_ms", "stdin", NULL};
	uint64_t n;
	bool present;
	int ret = check_keys("exec", root, keys, why, why_len);

	if (ret < 0)
		return ret;
	json_t *argv = json_object_get(root, "argv");
	if (!argv)
		return fail(why, why_len, "exec: missing field \"argv\" (an array of strings)");
	if (!json_is_array(argv) || json_array_size(argv) == 0)
		return fail(why, why_len,
			    "exec: field \"argv\" is %s (expected a non-empty array of strings)",
			    json_is_array(argv) ? "an empty array" : fk_json_kind(argv));
	x->argc = json_array_size(argv);
	x->argv = calloc(x->argc + 1, sizeof(*x->argv));
	if (!x->argv)
		return fail(why, why_len, "exec: out of memory for %zu arguments", x->argc);
	for (size_t i = 0; i < x->argc; i++) {
		json_t *arg = json_array_get(argv, i);
		if (!json_is_string(arg))
			return fail(why, why_len, "exec: argv[%zu] is %s (expected a string)", i,
				    fk_json_kind(arg));
		x->argv[i] = json_string_value(arg);
	}
	if (x->argv[0][0] == '\0')
		return fail(why, why_len, "exec: argv[0] is empty (expected a path or a name)");

	x->env = json_object_get(root, "env");
	if (x->env) {
		const char *key;
		json_t *value;
		if (!json_is_object(x->env))
			return fail(why, why_len,
				    "exec: field \"env\" is %s (expected an object of strings)",
				    fk_json_kind(x->env));
		json_object_foreach(x->env, key, value)
		{
			if (key[0] == '\0' || strchr(key, '='))
				return fail(why, why_len,
					    "exec: env name \"%.64s\" is empty or contains '='",
					    key);
			if (!json_is_string(value))
				return fail(why, why_len,
					    "exec: env \"%.64s\" is %s (expected a string)", key,
					    fk_json_kind(value));
		}
	}
	ret = get_string("exec", root, "cwd", false, &x->cwd, why, why_len);
	if (ret < 0)
		return ret;
	if (x->cwd && x->cwd[0] != '/')
		return fail(why, why_len, "exec: cwd \"%.200s\" is not absolute", x->cwd);
	ret = get_uint("exec", root, "uid", false, UINT32_MAX - 1, &x->has_uid, &n, why, why_len);
	if (ret < 0)
		return ret;
	x->uid = (uint32_t)n;
	ret = get_uint("exec", root, "gid", false, UINT32_MAX - 1, &x->has_gid, &n, why, why_len);
	if (ret < 0)
		return ret;
	x->gid = (uint32_t)n;
	x->timeout_ms = 0;
	ret = get_uint("exec", root, "timeout_ms", false, AGENT_TIMEOUT_MS_MAX, &present,
		       &x->timeout_ms, why, why_len);
	if (ret < 0)
		return ret;
	return get_bool("exec", root, "stdin", &x->want_stdin, why, why_len);
}

static int parse_path_op(const char *op, json_t *root, struct path_request *f, char *why,
			 size_t why_len)
{
	static const char *const put_keys[] = {"op", "path", "mode", NULL};
	static const char *const rm_keys[] = {"op", "path", "recursive", NULL};
	static const char *const path_keys[] = {"op", "path", NULL};
	bool is_put = strcmp(op, "put") == 0, is_rm = strcmp(op, "rm") == 0;
	int ret = check_keys(op, root,
			     is_put  ? put_keys
			     : is_rm ? rm_keys
				     : path_keys,
			     why, why_len);

	if (ret < 0)
		return ret;
	ret = get_path(op, root, &f->path, why, why_len);
	if (ret < 0)
		return ret;
	if (is_put) {
		uint64_t mode = AGENT_DEFAULT_MODE;
		bool present;
		ret = get_uint(op, root, "mode", false, 07777, &present, &mode, why, why_len);
		if (ret < 0)
			return ret;
		f->mode = present ? (uint32_t)mode : AGENT_DEFAULT_MODE;
	}
	if (is_rm)
		return get_bool(op, root, "recursive", &f->recursive, why, why_len);
	return 0;
}

static int parse_hex_field(json_t *root, const char *key, uint8_t *out, size_t min_len,
			   size_t max_len, char *why, size_t why_len)
{
	const char *hex;
	int ret = get_string("fork_notify", root, key, true, &hex, why, why_len);

	if (ret < 0)
		return ret;
	ret = agent_hex_decode(hex, out, min_len, max_len);
	if (ret < 0 && min_len == max_len)
		return fail(why, why_len, "fork_notify: \"%s\" is not %zu hex digits", key,
			    2 * min_len);
	if (ret < 0)
		return fail(why, why_len,
			    "fork_notify: \"%s\" is not hex of %zu..%zu bytes (%zu..%zu digits)",
			    key, min_len, max_len, 2 * min_len, 2 * max_len);
	return ret;
}

static int parse_fork_notify(json_t *root, struct fork_notify_request *n, char *why, size_t why_len)
{
	static const char *const keys[] = {"op",       "generation", "entropy", "realtime_ns",
					   "hostname", "machine_id", NULL};
	uint8_t machine_id[AGENT_MACHINE_ID_LEN];
	const char *hostname;
	uint64_t realtime_ns;
	bool present;
	int ret = check_keys("fork_notify", root, keys, why, why_len);

	if (ret < 0)
		return ret;
	ret = parse_hex_field(root, "generation", n->generation, AGENT_GENID_LEN, AGENT_GENID_LEN,
			      why, why_len);
	if (ret < 0)
		return ret;
	ret = parse_hex_field(root, "entropy", n->entropy, AGENT_ENTROPY_MIN, AGENT_ENTROPY_MAX,
			      why, why_len);
	if (ret < 0)
		return ret;
	n->entropy_len = (size_t)ret;
	ret = get_uint("fork_notify", root, "realtime_ns", true, INT64_MAX, &present, &realtime_ns,
		       why, why_len);
	if (ret < 0)
		return ret;
	n->realtime_ns = (int64_t)realtime_ns;
	ret = get_string("fork_notify", root, "hostname", true, &hostname, why, why_len);
	if (ret < 0)
		return ret;
	if (!agent_hostname_valid(hostname))
		return fail(why, why_len,
			    "fork_notify: hostname \"%.80s\" is not 1..%u characters of "
			    "[A-Za-z0-9.-]",
			    hostname, AGENT_HOSTNAME_MAX);
	strcpy(n->hostname, hostname);
	ret = parse_hex_field(root, "machine_id", machine_id, sizeof(machine_id),
			      sizeof(machine_id), why, why_len);
	if (ret < 0)
		return ret;
	bool all_zero = true;
	for (size_t i = 0; i < sizeof(machine_id); i++)
		all_zero &= machine_id[i] == 0;
	if (all_zero)
		return fail(why, why_len, "fork_notify: machine_id is all zeros (not a valid ID)");
	agent_hex_encode(machine_id, sizeof(machine_id), n->machine_id);
	return 0;
}

static const struct {
	const char *name;
	enum agent_op op;
} ops[] = {
    {"ping", AGENT_OP_PING}, {"exec", AGENT_OP_EXEC},	      {"put", AGENT_OP_PUT},
    {"get", AGENT_OP_GET},   {"stat", AGENT_OP_STAT},	      {"ls", AGENT_OP_LS},
    {"rm", AGENT_OP_RM},     {"shutdown", AGENT_OP_SHUTDOWN}, {"fork_notify", AGENT_OP_FORK_NOTIFY},
};

int agent_request_parse(const uint8_t *payload, size_t len, struct agent_request *req, char *why,
			size_t why_len)
{
	static const char *const op_only[] = {"op", NULL};
	static const char *const shutdown_keys[] = {"op", "action", NULL};
	json_error_t jerr;
	const char *op, *action;
	size_t i;
	int ret;

	memset(req, 0, sizeof(*req));
	req->op_name = "request";
	req->root =
	    json_loadb((const char *)payload, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (!req->root)
		return fail(why, why_len, "REQUEST is not valid JSON: %s (at byte %d)", jerr.text,
			    jerr.position);
	if (!json_is_object(req->root))
		return fail(why, why_len, "REQUEST is %s (expected a JSON object)",
			    fk_json_kind(req->root));
	ret = get_string("REQUEST", req->root, "op", true, &op, why, why_len);
	if (ret < 0)
		return ret;
	for (i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		if (strcmp(op, ops[i].name) == 0)
			break;
	if (i == sizeof(ops) / sizeof(ops[0]))
		return fail(why, why_len,
			    "unknown op \"%.64s\" (expected ping, exec, put, get, stat, ls, rm, "
			    "shutdown or fork_notify)",
			    op);
	req->op = ops[i].op;
	req->op_name = ops[i].name;

	switch (req->op) {
	case AGENT_OP_PING:
		return check_keys("ping", req->root, op_only, why, why_len);
	case AGENT_OP_EXEC:
		return parse_exec(req->root, &req->exec, why, why_len);
	case AGENT_OP_PUT:
	case AGENT_OP_GET:
	case AGENT_OP_STAT:
	case AGENT_OP_LS:
	case AGENT_OP_RM:
		return parse_path_op(req->op_name, req->root, &req->file, why, why_len);
	case AGENT_OP_SHUTDOWN:
		ret = check_keys("shutdown", req->root, shutdown_keys, why, why_len);
		if (ret < 0)
			return ret;
		ret = get_string("shutdown", req->root, "action", true, &action, why, why_len);
		if (ret < 0)
			return ret;
		if (strcmp(action, "poweroff") != 0 && strcmp(action, "reboot") != 0)
			return fail(why, why_len,
				    "shutdown: action \"%.64s\" (expected \"poweroff\" or "
				    "\"reboot\")",
				    action);
		req->reboot = strcmp(action, "reboot") == 0;
		return 0;
	case AGENT_OP_FORK_NOTIFY:
		return parse_fork_notify(req->root, &req->notify, why, why_len);
	}
	return fail(why, why_len, "op \"%s\" has no parser", op);
}

void agent_request_free(struct agent_request *req)
{
	if (req->op == AGENT_OP_EXEC)
		free(req->exec.argv);
	json_decref(req->root);
	memset(req, 0, sizeof(*req));
}

int agent_signal_parse(const uint8_t *payload, size_t len, int *signal, char *why, size_t why_len)
{
	static const char *const keys[] = {"signal", NULL};
	json_error_t jerr;
	uint64_t n;
	bool present;
	int ret;
	json_t *root =
	    json_loadb((const char *)payload, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);

	if (!root)
		return fail(why, why_len, "SIGNAL is not valid JSON: %s (at byte %d)", jerr.text,
			    jerr.position);
	if (!json_is_object(root)) {
		ret =
		    fail(why, why_len, "SIGNAL is %s (expected a JSON object)", fk_json_kind(root));
		goto out;
	}
	ret = check_keys("SIGNAL", root, keys, why, why_len);
	if (ret < 0)
		goto out;
	ret =
	    get_uint("SIGNAL", root, "signal", true, AGENT_SIGNAL_MAX, &present, &n, why, why_len);
	if (ret < 0)
		goto out;
	if (n == 0) {
		ret = fail(why, why_len, "SIGNAL: signal 0 (expected 1..%d)", AGENT_SIGNAL_MAX);
		goto out;
	}
	*signal = (int)n;
out:
	json_decref(root);
	return ret;
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int agent_hex_decode(const char *hex, uint8_t *out, size_t min_len, size_t max_len)
{
	size_t digits = strlen(hex);

	if (digits % 2)
		return -EINVAL;
	if (digits / 2 < min_len || digits / 2 > max_len)
		return -ERANGE;
	for (size_t i = 0; i < digits / 2; i++) {
		int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return (int)(digits / 2);
}

void agent_hex_encode(const uint8_t *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
}

bool agent_hostname_valid(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > AGENT_HOSTNAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '.'))
			return false;
	}
	return true;
}

void agent_env_free(char **env)
{
	if (!env)
		return;
	for (char **p = env; *p; p++)
		free(*p);
	free(env);
}

/* True if "K=V" entry has the name `key`. */
static bool env_entry_is(const char *entry, const char *key)
{
	size_t key_len = strlen(key);

	return strncmp(entry, key, key_len) == 0 && entry[key_len] == '=';
}

char **agent_exec_env(const char *const *defaults, json_t *env)
{
	size_t n_defaults = 0, n = 0;
	const char *key;
	json_t *value;

	while (defaults[n_defaults])
		n_defaults++;
	char **out = calloc(n_defaults + (env ? json_object_size(env) : 0) + 1, sizeof(*out));
	if (!out)
		return NULL;
	for (size_t i = 0; i < n_defaults; i++) {
		bool replaced = false;
		if (env)
			json_object_foreach(env, key, value) replaced |=
			    env_entry_is(defaults[i], key);
		if (replaced)
			continue;
		out[n] = strdup(defaults[i]);
		if (!out[n++])
			goto fail;
	}
	if (env)
		json_object_foreach(env, key, value)
		{
			if (asprintf(&out[n], "%s=%s", key, json_string_value(value)) < 0) {
				out[n] = NULL;
				goto fail;
			}
			n++;
		}
	return out;
fail:
	agent_env_free(out);
	return NULL;
}

json_t *agent_exit_json(int wait_status, bool timed_out)
{
	if (WIFSIGNALED(wait_status))
		return json_pack("{s:i,s:b}", "signal", WTERMSIG(wait_status), "timed_out",
				 timed_out);
	return json_pack("{s:i,s:b}", "exit_code", WEXITSTATUS(wait_status), "timed_out",
			 timed_out);
}
