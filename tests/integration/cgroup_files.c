/* SPDX-License-Identifier: MIT */
#include "cgroup_files.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/statfs.h>

#include "where.h"

#define CGROUP2_MAGIC 0x63677270

int cg_need_v2(const char *who)
{
	struct statfs fs;
	enum kvm_kind k;

	if (statfs("/sys/fs/cgroup", &fs) == 0 && fs.f_type == CGROUP2_MAGIC)
		return 0;
	k = where_kvm_kind();
	if (k != KVM_NESTED_TCG && k != KVM_NESTED_ACCEL) {
		fprintf(
		    stderr,
		    "%s: /sys/fs/cgroup is no cgroup v2 here; it runs in the nested test host\n",
		    who);
		return -1;
	}
	if (mount("none", "/sys/fs/cgroup", "cgroup2", 0, NULL) < 0) {
		fprintf(stderr, "%s: mount cgroup2 on /sys/fs/cgroup: %s\n", who, strerror(errno));
		return -1;
	}
	return 0;
}

long long cg_value(const char *file)
{
	long long v = -1;
	FILE *f = fopen(file, "r");

	if (!f)
		return -1;
	if (fscanf(f, "%lld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

long long cg_key(const char *file, const char *key)
{
	char line[256];
	size_t n = strlen(key);
	long long v = -1;
	FILE *f = fopen(file, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, key, n) == 0 && line[n] == ' ')
			v = strtoll(line + n + 1, NULL, 10);
	fclose(f);
	return v;
}
