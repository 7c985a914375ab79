/* SPDX-License-Identifier: MIT */
/* Probe-guest steps shared by the integration tests (see probe_cases.h). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "probe_cases.h"

#define HOSTILE_TIMEOUT_MS 120000

void probe_start(struct vmm_proc *p, const char *vmm, const char *mem, const char *cpus,
		 const char *append, ...)
{
	char *argv[40];
	va_list ap;
	int n = 0;

	argv[n++] = (char *)(vmm ? vmm : harness_vmm());
	argv[n++] = "--kernel";
	argv[n++] = (char *)harness_probe();
	argv[n++] = "--mem";
	argv[n++] = (char *)mem;
	argv[n++] = "--cpus";
	argv[n++] = (char *)cpus;
	argv[n++] = "--append";
	argv[n++] = (char *)append;
	va_start(ap, append);
	while (n < 39 && (argv[n] = va_arg(ap, char *)))
		n++;
	va_end(ap);
	argv[n] = NULL;
	assert_int_equal(vmm_start(p, argv), 0);
}

const char *probe_need_line(struct vmm_proc *p, const char *prefix, int timeout_ms)
{
	const char *line = vmm_need_line(p, prefix, timeout_ms);

	assert_non_null(line);
	return line;
}

void probe_expect_kv(struct vmm_proc *p, const char *key, const char *want)
{
	char buf[256];
	const char *got = vmm_value(p, key, buf, sizeof(buf));

	if (!got || strcmp(got, want) != 0) {
		fprintf(stderr, "%s: want '%s', got '%s'\n", key, want, got ? got : "(none)");
		vmm_dump(p);
	}
	assert_non_null(got);
	assert_string_equal(got, want);
}

void probe_expect_exit(struct vmm_proc *p, int want, int timeout_ms)
{
	int status = vmm_wait(p, timeout_ms);

	if (status != want)
		vmm_dump(p);
	assert_int_equal(status, want);
}

void probe_make_disk(const char *path, size_t size, uint8_t *first4k)
{
	uint8_t *buf = malloc(size);
	int fd;

	assert_non_null(buf);
	srand(1234);
	for (size_t i = 0; i < size; i++)
		buf[i] = (uint8_t)rand();
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, size), (ssize_t)size);
	close(fd);
	if (first4k)
		memcpy(first4k, buf, size < 4096 ? size : 4096);
	free(buf);
}

void probe_hostile_run(const char *dir)
{
	char disk[300];
	uint8_t first[4096];
	struct vmm_proc p;
	int needs_reset = 0;

	snprintf(disk, sizeof(disk), "%s/hostile.img", dir);
	probe_make_disk(disk, 1 << 20, first);
	probe_start(&p, harness_vmm_asan(), "256M", "2", "work=hostile,idle then=poweroff",
		    "--disk", disk, NULL);
	probe_need_line(&p, "DONE", HOSTILE_TIMEOUT_MS);
	probe_expect_exit(&p, 0, HOSTILE_TIMEOUT_MS);
	probe_expect_kv(&p, "hostile.done", "1");
	probe_expect_kv(&p, "hostile.recovered", "1");
	/* The ring-breaking cases each left the device in DEVICE_NEEDS_RESET. */
	for (int i = 0; i < p.nr_lines; i++) {
		const char *s = strstr(p.lines[i], "=status:0x");
		if (strncmp(p.lines[i], "hostile.", 8) == 0 && s &&
		    (strtoul(s + 8, NULL, 16) & 0x40))
			needs_reset++;
	}
	if (needs_reset < 5)
		vmm_dump(&p);
	assert_true(needs_reset >= 5);
	assert_null(strstr(p.err_text, "AddressSanitizer"));
	assert_null(strstr(p.err_text, "runtime error"));
	vmm_free(&p);
}
