/* SPDX-License-Identifier: MIT */
/* Pure parsing for forkd-init, kept apart from the PID 1 code so unit tests can link it. */
#ifndef FORKD_GUEST_INIT_PARSE_H
#define FORKD_GUEST_INIT_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The command to run, from the kernel command line (/proc/cmdline): everything
 * after the first " -- " (or a leading "-- "), verbatim; otherwise the value of
 * forkd.cmd= (in double quotes if it has spaces). Returns 1 and fills out,
 * 0 if there is no command, -ENAMETOOLONG if it does not fit.
 */
int init_cmdline_command(const char *cmdline, char *out, size_t out_size);

/*
 * A boolean option among the kernel command line's words before " -- ":
 * "NAME", "NAME=1", "NAME=on" or "NAME=yes" give 1; "NAME=0", "NAME=off",
 * "NAME=no" or no such word give 0; any other value gives -EINVAL. The last
 * word naming it wins.
 */
int init_cmdline_flag(const char *cmdline, const char *name);

/*
 * Iterates the module list (/lib/modules/forkd.list): one path per line,
 * blanks and lines starting with '#' skipped, surrounding whitespace trimmed.
 * Returns 1 with the next path in out, 0 at the end, -ENAMETOOLONG for a line
 * that does not fit (the cursor moves past it).
 */
int init_modlist_next(const char **cursor, char *out, size_t out_size);

/* The first field of /proc/uptime ("12.34 5.67\n" -> "12.34"); -EINVAL if not a number. */
int init_parse_uptime(const char *text, char *out, size_t out_size);

/* Shell convention: the exit code, or 128 + the signal that ended the process. */
int init_exit_code(int wait_status);

/*
 * The value of NAME=VALUE among the kernel command line's words before " -- "
 * (the last such word wins). Returns 1 with the value in out, 0 if there is
 * none, -ENAMETOOLONG if it does not fit.
 */
int init_cmdline_value(const char *cmdline, const char *name, char *out, size_t out_size);

/*
 * forkd.root=: a block device under /dev/ ("/dev/vda"): letters, digits and
 * / _ - . only, no "..". Returns 0 or -EINVAL.
 */
int init_root_device_valid(const char *dev);

/*
 * forkd.hostname=: 1 to 63 characters of [A-Za-z0-9-], not starting or ending
 * with '-' (one DNS label). Returns 0 or -EINVAL.
 */
int init_hostname_valid(const char *name);

/*
 * forkd.upper_size= as tmpfs's mount option: "N%" (1 to 100 percent of RAM)
 * or N with an optional k, m or g suffix (bytes otherwise; at least 1m in
 * all). Writes "size=<value>" to out. Returns 0, -EINVAL for anything else,
 * -ENAMETOOLONG if out is too small.
 */
int init_tmpfs_size_option(const char *value, char *out, size_t out_size);

/* Byte offset and value of the ext2/3/4 superblock magic (s_magic, little-endian). */
#define INIT_EXT_MAGIC_OFFSET 1080
#define INIT_EXT_MAGIC	      0xEF53

/* 1 if the first len bytes of a device hold the ext2/3/4 magic, else 0. */
int init_has_ext_magic(const unsigned char *head, size_t len);

/* overlayfs's options: "lowerdir=L,upperdir=U,workdir=W"; 0 or -ENAMETOOLONG,
 * -EINVAL if a path has a ',' or ':' (overlay's separators). */
int init_overlay_options(const char *lower, const char *upper, const char *work, char *out,
			 size_t out_size);

/* The guest's network from forkd.net= (docs/networking.md). Addresses in host byte order. */
struct init_net {
	uint32_t addr;	 /* the guest's address on eth0 */
	unsigned prefix; /* 1..32 */
	bool has_gateway;
	uint32_t gateway; /* the default route's next hop, inside addr/prefix */
};

/*
 * forkd.net=ADDR/PREFIX[,gw=GATEWAY], e.g. "172.16.0.2/30,gw=172.16.0.1":
 * dotted-quad addresses, PREFIX 1 to 32. ADDR must not be the subnet's
 * network or broadcast address (for PREFIX <= 30); GATEWAY must lie in the
 * subnet and differ from ADDR. Returns 0, or -EINVAL with why (a static
 * string) in *why.
 */
int init_net_parse(const char *value, struct init_net *out, const char **why);

#endif
