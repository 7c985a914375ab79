/* SPDX-License-Identifier: MIT */
#include "init_parse.h"

#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <sys/wait.h>

static int copy_trimmed(const char *start, const char *end, char *out, size_t out_size)
{
	while (start < end && isspace((unsigned char)*start))
		start++;
	while (end > start && isspace((unsigned char)end[-1]))
		end--;
	size_t n = (size_t)(end - start);
	if (n + 1 > out_size)
		return -ENAMETOOLONG;
	memcpy(out, start, n);
	out[n] = '\0';
	return 0;
}

/* forkd.cmd=VALUE or forkd.cmd="VALUE WITH SPACES", as a separate word. */
static int find_cmd_param(const char *cmdline, char *out, size_t out_size)
{
	static const char key[] = "forkd.cmd=";
	const char *p = cmdline;

	while ((p = strstr(p, key)) != NULL) {
		if (p != cmdline && !isspace((unsigned char)p[-1])) {
			p += sizeof(key) - 1;
			continue;
		}
		const char *v = p + sizeof(key) - 1, *end;
		if (*v == '"') {
			v++;
			end = strchr(v, '"');
			if (!end)
				end = v + strlen(v);
		} else {
			end = v;
			while (*end && !isspace((unsigned char)*end))
				end++;
		}
		int ret = copy_trimmed(v, end, out, out_size);
		if (ret < 0)
			return ret;
		return out[0] ? 1 : 0;
	}
	return 0;
}

int init_cmdline_command(const char *cmdline, char *out, size_t out_size)
{
	const char *rest = NULL;

	if (strncmp(cmdline, "--", 2) == 0 &&
	    (cmdline[2] == '\0' || isspace((unsigned char)cmdline[2])))
		rest = cmdline + 2;
	for (const char *p = cmdline; !rest && (p = strstr(p, "--")) != NULL; p += 2) {
		if (p != cmdline && isspace((unsigned char)p[-1]) &&
		    (p[2] == '\0' || isspace((unsigned char)p[2])))
			rest = p + 2;
	}
	if (!rest)
		return find_cmd_param(cmdline, out, out_size);
	int ret = copy_trimmed(rest, rest + strlen(rest), out, out_size);
	if (ret < 0)
		return ret;
	return out[0] ? 1 : 0;
}

int init_modlist_next(const char **cursor, char *out, size_t out_size)
{
	const char *p = *cursor;

	while (*p) {
		const char *eol = strchr(p, '\n');
		const char *end = eol ? eol : p + strlen(p);
		const char *next = eol ? eol + 1 : end;
		int ret = copy_trimmed(p, end, out, out_size);

		*cursor = p = next;
		if (ret < 0)
			return ret;
		if (out[0] && out[0] != '#')
			return 1;
	}
	*cursor = p;
	return 0;
}

int init_parse_uptime(const char *text, char *out, size_t out_size)
{
	size_t n = 0;

	while (isdigit((unsigned char)text[n]) || (text[n] == '.' && n > 0))
		n++;
	if (n == 0 || (text[n] && !isspace((unsigned char)text[n])))
		return -EINVAL;
	if (n + 1 > out_size)
		return -ENAMETOOLONG;
	memcpy(out, text, n);
	out[n] = '\0';
	return 0;
}

int init_exit_code(int wait_status)
{
	if (WIFEXITED(wait_status))
		return WEXITSTATUS(wait_status);
	if (WIFSIGNALED(wait_status))
		return 128 + WTERMSIG(wait_status);
	return 255;
}
