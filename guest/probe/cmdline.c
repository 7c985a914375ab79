/* SPDX-License-Identifier: MIT */
/* The kernel command line: space-separated key=value options; unknown keys are ignored. */
#include "probe.h"

struct config cfg = {
    .touch_mib = 64,
    .pattern_mib = 16,
    .stall_us = 200,
    .blk_read_sectors = 8,
    .vsock_port = 1024,
    .vsock_probe_port = 9,
    .vsock_flood_port = 1000,
    .vsock_flood = 1100,
    .net_tx = 4,
    .net_len = 128,
    .net_flood = 20000,
};

static const char *const work_names[] = {
    [WORK_IDLE] = "idle",	[WORK_TOUCH] = "touch",
    [WORK_PATTERN] = "pattern", [WORK_STALL] = "stall",
    [WORK_BLK] = "blk",		[WORK_HOSTILE] = "hostile",
    [WORK_BLKLOOP] = "blkloop", [WORK_VSOCK] = "vsock",
    [WORK_NET] = "net",		[WORK_NETHOSTILE] = "nethostile",
};

const char *work_name(enum work w)
{
	return (unsigned)w < ARRAY_SIZE(work_names) ? work_names[w] : "?";
}

bool work_is_finite(enum work w)
{
	return w == WORK_TOUCH || w == WORK_BLK || w == WORK_HOSTILE || w == WORK_NETHOSTILE;
}

static void parse_work(const char *v, size_t n)
{
	unsigned cpu = 0;
	size_t start = 0;

	for (size_t i = 0; i <= n; i++) {
		bool found = false;

		if (i < n && v[i] != ',')
			continue;
		if (cpu < MAX_CPUS) {
			for (unsigned w = 0; w < ARRAY_SIZE(work_names); w++) {
				if (tok_eq(v + start, i - start, work_names[w])) {
					cfg.work[cpu] = (enum work)w;
					found = true;
				}
			}
			if (!found && i > start)
				say_text("cmdline.error=unknown workload ", v + start, i - start);
		}
		cpu++;
		start = i + 1;
	}
}

static bool parse_number(const char *key, size_t klen, const char *v, size_t n, uint64_t *out)
{
	char name[32], prefix[80];

	if (parse_u64(v, n, out))
		return true;
	if (klen >= sizeof(name))
		klen = sizeof(name) - 1;
	memcpy(name, key, klen);
	name[klen] = '\0';
	fmt(prefix, sizeof(prefix), "cmdline.error=bad number for %s: ", name);
	say_text(prefix, v, n);
	return false;
}

static void parse_option(const char *k, size_t klen, const char *v, size_t vlen)
{
	static const struct {
		const char *key;
		uint64_t *dst;
	} numbers[] = {
	    {"touch_mib", &cfg.touch_mib},
	    {"pattern_mib", &cfg.pattern_mib},
	    {"stall_us", &cfg.stall_us},
	    {"blk_read_sectors", &cfg.blk_read_sectors},
	    {"blk_write_sector", &cfg.blk_write_sector},
	    {"tsc_khz", &cfg.tsc_khz},
	    {"virtio_mmio", &cfg.virtio_mmio},
	    {"vmgenid", &cfg.vmgenid},
	    {"verbose", &cfg.verbose},
	    {"vsock_port", &cfg.vsock_port},
	    {"vsock_probe_port", &cfg.vsock_probe_port},
	    {"vsock_flood_port", &cfg.vsock_flood_port},
	    {"vsock_flood", &cfg.vsock_flood},
	    {"net_tx", &cfg.net_tx},
	    {"net_len", &cfg.net_len},
	    {"net_mrg", &cfg.net_mrg},
	    {"net_rxbuf", &cfg.net_rxbuf},
	    {"net_flood", &cfg.net_flood},
	    {"net_offload", &cfg.net_offload},
	};

	if (tok_eq(k, klen, "work")) {
		parse_work(v, vlen);
		return;
	}
	if (tok_eq(k, klen, "then")) {
		if (tok_eq(v, vlen, "poweroff"))
			cfg.then = THEN_POWEROFF;
		else if (tok_eq(v, vlen, "reboot"))
			cfg.then = THEN_REBOOT;
		else
			say_text("cmdline.error=unknown then= ", v, vlen);
		return;
	}
	if (tok_eq(k, klen, "pattern_freeze")) {
		if (tok_eq(v, vlen, "genid"))
			cfg.pattern_freeze = true;
		else if (tok_eq(v, vlen, "off"))
			cfg.pattern_freeze = false;
		else
			say_text("cmdline.error=unknown pattern_freeze= (expected genid or off): ",
				 v, vlen);
		return;
	}
	if (tok_eq(k, klen, "pages")) {
		if (tok_eq(v, vlen, "4k"))
			cfg.pages_4k = true;
		else if (tok_eq(v, vlen, "2m"))
			cfg.pages_4k = false;
		else
			say_text("cmdline.error=unknown pages= (expected 4k or 2m): ", v, vlen);
		return;
	}
	for (unsigned i = 0; i < ARRAY_SIZE(numbers); i++) {
		if (tok_eq(k, klen, numbers[i].key)) {
			if (parse_number(k, klen, v, vlen, numbers[i].dst) &&
			    numbers[i].dst == &cfg.blk_write_sector)
				cfg.blk_write = true;
			return;
		}
	}
}

void cmdline_parse(void)
{
	const char *s = cfg.cmdline;

	while (*s) {
		const char *tok, *eq = NULL;

		while (*s == ' ' || *s == '\t')
			s++;
		tok = s;
		while (*s && *s != ' ' && *s != '\t') {
			if (*s == '=' && !eq)
				eq = s;
			s++;
		}
		if (eq)
			parse_option(tok, (size_t)(eq - tok), eq + 1, (size_t)(s - eq - 1));
	}
}
