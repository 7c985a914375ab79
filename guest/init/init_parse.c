/* SPDX-License-Identifier: MIT */
#include "init_parse.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
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

int init_cmdline_flag(const char *cmdline, const char *name)
{
	size_t name_len = strlen(name);
	const char *p = cmdline;
	int value = 0;

	for (;;) {
		while (isspace((unsigned char)*p))
			p++;
		if (!*p)
			return value;
		const char *end = p;
		while (*end && !isspace((unsigned char)*end))
			end++;
		size_t len = (size_t)(end - p);
		if (len == 2 && p[0] == '-' && p[1] == '-')
			return value; /* the command starts here */
		if (len >= name_len && strncmp(p, name, name_len) == 0) {
			const char *v = p + name_len;
			size_t vlen = len - name_len;
			if (vlen == 0)
				value = 1;
			else if (*v != '=')
				; /* a longer name sharing the prefix */
			else if ((vlen == 2 && v[1] == '1') ||
				 (vlen == 3 && !strncmp(v, "=on", 3)) ||
				 (vlen == 4 && !strncmp(v, "=yes", 4)))
				value = 1;
			else if ((vlen == 2 && v[1] == '0') ||
				 (vlen == 4 && !strncmp(v, "=off", 4)) ||
				 (vlen == 3 && !strncmp(v, "=no", 3)))
				value = 0;
			else
				return -EINVAL;
		}
		p = end;
	}
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

int init_cmdline_value(const char *cmdline, const char *name, char *out, size_t out_size)
{
	size_t name_len = strlen(name);
	const char *p = cmdline;
	int found = 0;

	for (;;) {
		while (isspace((unsigned char)*p))
			p++;
		if (!*p)
			return found;
		const char *end = p;
		while (*end && !isspace((unsigned char)*end))
			end++;
		size_t len = (size_t)(end - p);
		if (len == 2 && p[0] == '-' && p[1] == '-')
			return found; /* the command starts here */
		if (len > name_len && strncmp(p, name, name_len) == 0 && p[name_len] == '=') {
			size_t vlen = len - name_len - 1;
			if (vlen + 1 > out_size)
				return -ENAMETOOLONG;
			memcpy(out, p + name_len + 1, vlen);
			out[vlen] = '\0';
			found = 1;
		}
		p = end;
	}
}

int init_root_device_valid(const char *dev)
{
	if (strncmp(dev, "/dev/", 5) != 0 || !dev[5] || strstr(dev, ".."))
		return -EINVAL;
	for (const char *p = dev + 5; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("/_-.", *p))
			return -EINVAL;
	return 0;
}

int init_hostname_valid(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > 63 || name[0] == '-' || name[len - 1] == '-')
		return -EINVAL;
	for (const char *p = name; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '-')
			return -EINVAL;
	return 0;
}

int init_tmpfs_size_option(const char *value, char *out, size_t out_size)
{
	unsigned long long n = 0, scale = 1;
	const char *p = value;
	int len;

	if (!isdigit((unsigned char)*p))
		return -EINVAL;
	for (; isdigit((unsigned char)*p); p++) {
		if (n > (1ULL << 50))
			return -EINVAL; /* far beyond any guest's RAM */
		n = n * 10 + (unsigned long long)(*p - '0');
	}
	if (p[0] == '%' && !p[1]) {
		if (n < 1 || n > 100)
			return -EINVAL;
	} else {
		if (*p && !p[1] && strchr("kK", *p))
			scale = 1ULL << 10;
		else if (*p && !p[1] && strchr("mM", *p))
			scale = 1ULL << 20;
		else if (*p && !p[1] && strchr("gG", *p))
			scale = 1ULL << 30;
		else if (*p)
			return -EINVAL;
		/* Less than a MiB cannot hold even the overlay's work directory for long. */
		if (n * scale < (1ULL << 20))
			return -EINVAL;
	}
	len = snprintf(out, out_size, "size=%s", value);
	if (len < 0 || (size_t)len >= out_size)
		return -ENAMETOOLONG;
	return 0;
}

int init_has_ext_magic(const unsigned char *head, size_t len)
{
	if (len < INIT_EXT_MAGIC_OFFSET + 2)
		return 0;
	return (head[INIT_EXT_MAGIC_OFFSET] | head[INIT_EXT_MAGIC_OFFSET + 1] << 8) ==
	       INIT_EXT_MAGIC;
}

int init_overlay_options(const char *lower, const char *upper, const char *work, char *out,
			 size_t out_size)
{
	const char *paths[] = {lower, upper, work};
	int len;

	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
		if (strpbrk(paths[i], ",:"))
			return -EINVAL;
	len = snprintf(out, out_size, "lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work);
	if (len < 0 || (size_t)len >= out_size)
		return -ENAMETOOLONG;
	return 0;
}

/* A dotted quad, exactly four decimal octets; advances *p past it. */
static int parse_ipv4(const char **p, uint32_t *out)
{
	uint32_t addr = 0;
	const char *s = *p;

	for (int octet = 0; octet < 4; octet++) {
		unsigned value = 0;
		int digits = 0;

		if (octet > 0 && *s++ != '.')
			return -EINVAL;
		for (; isdigit((unsigned char)*s) && digits < 4; s++, digits++)
			value = value * 10 + (unsigned)(*s - '0');
		if (digits == 0 || digits > 3 || value > 255)
			return -EINVAL;
		addr = addr << 8 | value;
	}
	*p = s;
	*out = addr;
	return 0;
}

int init_net_parse(const char *value, struct init_net *out, const char **why)
{
	const char *p = value;
	unsigned prefix = 0;
	int digits = 0;

	memset(out, 0, sizeof(*out));
	if (parse_ipv4(&p, &out->addr) < 0) {
		*why = "expected ADDR/PREFIX[,gw=GATEWAY] with a dotted-quad ADDR";
		return -EINVAL;
	}
	if (*p++ != '/') {
		*why = "expected '/PREFIX' after the address";
		return -EINVAL;
	}
	for (; isdigit((unsigned char)*p) && digits < 3; p++, digits++)
		prefix = prefix * 10 + (unsigned)(*p - '0');
	if (digits == 0 || prefix < 1 || prefix > 32) {
		*why = "expected a PREFIX of 1 to 32";
		return -EINVAL;
	}
	out->prefix = prefix;
	uint32_t mask = prefix == 32 ? 0xffffffffu : ~(0xffffffffu >> prefix);
	uint32_t host = out->addr & ~mask;
	/* /31 and /32 have no network or broadcast address (RFC 3021). */
	if (prefix <= 30 && (host == 0 || host == ~mask)) {
		*why = "the address is its subnet's network or broadcast address";
		return -EINVAL;
	}
	if (*p == '\0')
		return 0;
	if (strncmp(p, ",gw=", 4) != 0) {
		*why = "expected ',gw=GATEWAY' or nothing after ADDR/PREFIX";
		return -EINVAL;
	}
	p += 4;
	if (parse_ipv4(&p, &out->gateway) < 0 || *p != '\0') {
		*why = "expected a dotted-quad GATEWAY and nothing after it";
		return -EINVAL;
	}
	if ((out->gateway & mask) != (out->addr & mask) || out->gateway == out->addr) {
		*why = "the gateway must be another address in ADDR/PREFIX";
		return -EINVAL;
	}
	out->has_gateway = true;
	return 0;
}
