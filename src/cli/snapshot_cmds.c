/* SPDX-License-Identifier: MIT */
/* `forkd snapshot verify DIR [--json]`: a snapshot's memory file against its chunk checksums. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "cli/cli.h"
#include "state/snapshot_format.h"
#include "state/snapshot_diff.h"

/* `forkd snapshot CMD DIR [--json]`: the directory and the flag; 0, or the usage error's exit. */
static int dir_and_json(const char *cmd, int argc, char **argv, const char **dir, bool *json)
{
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			*json = true;
		else if (argv[i][0] == '-')
			return cli_usage_error("snapshot %s: unknown option '%s' (expected --json)",
					       cmd, argv[i]);
		else if (*dir)
			return cli_usage_error(
			    "snapshot %s: unexpected argument '%s' (expected one "
			    "snapshot directory)",
			    cmd, argv[i]);
		else
			*dir = argv[i];
	}
	if (!*dir)
		return cli_usage_error("snapshot %s: expected a snapshot directory", cmd);
	return 0;
}

int cli_snapshot_verify(int argc, char **argv)
{
	const char *dir = NULL;
	struct snap_verify_stats vs;
	struct snap_reader *r = NULL;
	struct fk_err err = {0};
	uint64_t chunk = 0, nr = 0;
	const uint8_t *hashes;
	bool json = false;
	int ret;

	if ((ret = dir_and_json("verify", argc, argv, &dir, &json)) != 0)
		return ret;
	ret = snap_reader_open(dir, &r, &err);
	if (ret == 0) {
		ret = snap_verify_memory(r, &vs, &err);
		snap_reader_mem_hashes(r, &chunk, &nr, &hashes);
	}
	if (json) {
		json_t *o = json_pack("{s:s,s:b}", "path", dir, "ok", ret == 0);

		if (ret < 0)
			json_object_set_new(o, "error", json_string(err.msg));
		if (r && ret != -ENOENT) {
			json_object_set_new(o, "chunk_bytes", json_integer((json_int_t)chunk));
			json_object_set_new(o, "chunks", json_integer((json_int_t)vs.chunks));
			json_object_set_new(o, "hole_chunks",
					    json_integer((json_int_t)vs.hole_chunks));
			json_object_set_new(o, "bytes_read",
					    json_integer((json_int_t)vs.bytes_read));
			json_object_set_new(o, "bad_chunks",
					    json_integer((json_int_t)vs.bad_chunks));
			if (vs.bad_chunks)
				json_object_set_new(o, "first_bad_offset",
						    json_integer((json_int_t)vs.first_bad_offset));
			json_object_set_new(o, "verify_us", json_integer((json_int_t)vs.us));
		}
		json_dumpf(o, stdout, JSON_COMPACT);
		putchar('\n');
		json_decref(o);
	} else if (ret == 0) {
		printf("%s: ok: %llu chunks of %llu KiB (%llu holes, not read), %llu MiB read in "
		       "%llu ms\n",
		       dir, (unsigned long long)vs.chunks, (unsigned long long)(chunk >> 10),
		       (unsigned long long)vs.hole_chunks,
		       (unsigned long long)(vs.bytes_read >> 20),
		       (unsigned long long)(vs.us / 1000));
	}
	if (ret < 0 && !json)
		fprintf(stderr, "forkd: snapshot verify: %s\n", err.msg);
	snap_reader_close(r);
	return ret < 0 ? CLI_EXIT_NOT_OK : 0;
}

/*
 * `forkd snapshot prewarm DIR [--json]`: the memory file into the page cache
 * before a fan-out (forkd spawn), holes skipped.
 */
int cli_snapshot_prewarm(int argc, char **argv)
{
	struct snap_prewarm_stats st;
	struct fk_err err = {0};
	const char *dir = NULL;
	bool json = false;
	double mib_per_s;
	int ret;

	if ((ret = dir_and_json("prewarm", argc, argv, &dir, &json)) != 0)
		return ret;
	ret = snap_prewarm(dir, &st, &err);
	mib_per_s = st.us ? (double)st.data_bytes / 1048576.0 / ((double)st.us / 1e6) : 0;
	if (json) {
		json_t *o = json_pack("{s:s,s:b}", "path", dir, "ok", ret == 0);

		if (ret < 0) {
			json_object_set_new(o, "error", json_string(err.msg));
		} else {
			json_object_set_new(o, "file_bytes",
					    json_integer((json_int_t)st.file_bytes));
			json_object_set_new(o, "data_bytes",
					    json_integer((json_int_t)st.data_bytes));
			json_object_set_new(o, "extents", json_integer((json_int_t)st.extents));
			json_object_set_new(o, "resident_bytes",
					    json_integer((json_int_t)st.resident_bytes));
			json_object_set_new(o, "prewarm_us", json_integer((json_int_t)st.us));
			json_object_set_new(o, "mib_per_s", json_real(mib_per_s));
		}
		json_dumpf(o, stdout, JSON_COMPACT);
		putchar('\n');
		json_decref(o);
	} else if (ret == 0) {
		printf("%s: %llu MiB of data in %llu extents (of a %llu MiB memory file; holes not "
		       "read) in the page cache in %llu ms, %.0f MiB/s; %llu MiB of the file "
		       "cached now\n",
		       dir, (unsigned long long)(st.data_bytes >> 20),
		       (unsigned long long)st.extents, (unsigned long long)(st.file_bytes >> 20),
		       (unsigned long long)(st.us / 1000), mib_per_s,
		       (unsigned long long)(st.resident_bytes >> 20));
	} else {
		fprintf(stderr, "forkd: snapshot prewarm: %s\n", err.msg);
	}
	return ret < 0 ? CLI_EXIT_NOT_OK : 0;
}

/*
 * `forkd snapshot compact DIR OUT [--json]`: the diff chain ending at DIR as
 * one full snapshot OUT, written atomically (docs/diff-snapshots.md).
 */
int cli_snapshot_compact(int argc, char **argv)
{
	const char *dir = NULL, *out = NULL;
	struct snap_compact_stats st;
	struct fk_err err = {0};
	bool json = false;
	int ret;

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			json = true;
		else if (argv[i][0] == '-')
			return cli_usage_error(
			    "snapshot compact: unknown option '%s' (expected --json)", argv[i]);
		else if (!dir)
			dir = argv[i];
		else if (!out)
			out = argv[i];
		else
			return cli_usage_error("snapshot compact: unexpected argument '%s' "
					       "(expected DIR OUT)",
					       argv[i]);
	}
	if (!dir || !out)
		return cli_usage_error("snapshot compact: expected DIR (a snapshot, usually a "
				       "diff) and OUT (the new full snapshot)");
	ret = snap_chain_compact(dir, out, &st, &err);
	if (json) {
		json_t *o = json_pack("{s:s,s:s,s:b}", "path", dir, "out", out, "ok", ret == 0);

		if (ret < 0) {
			json_object_set_new(o, "error", json_string(err.msg));
		} else {
			json_object_set_new(o, "links", json_integer(st.links));
			json_object_set_new(o, "overlay_bytes",
					    json_integer((json_int_t)st.overlay_bytes));
			json_object_set_new(o, "data_bytes",
					    json_integer((json_int_t)st.data_bytes));
			json_object_set_new(o, "compact_us", json_integer((json_int_t)st.us));
		}
		json_dumpf(o, stdout, JSON_COMPACT);
		putchar('\n');
		json_decref(o);
	} else if (ret == 0) {
		printf(
		    "%s: %d snapshots flattened into %s (%llu MiB of diffs, %llu MiB of data) in "
		    "%llu ms\n",
		    dir, st.links, out, (unsigned long long)(st.overlay_bytes >> 20),
		    (unsigned long long)(st.data_bytes >> 20), (unsigned long long)(st.us / 1000));
	} else {
		fprintf(stderr, "forkd: snapshot compact: %s\n", err.msg);
	}
	return ret < 0 ? CLI_EXIT_NOT_OK : 0;
}
