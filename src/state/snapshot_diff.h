/* SPDX-License-Identifier: MIT */
/*
 * Diff snapshot chains (docs/diff-snapshots.md): a snapshot that names a
 * parent stores only the pages that changed since it. Opening a chain walks
 * the parents to the full base, checking each one's identity; restore maps
 * the base copy-on-write and overlays each diff's pages, oldest first.
 */
#ifndef FORKD_STATE_SNAPSHOT_DIFF_H
#define FORKD_STATE_SNAPSHOT_DIFF_H

#include "state/snapshot_format.h"

struct snap_chain {
	int n; /* links: [0] the snapshot opened ... [n - 1] its full base */
	struct snap_reader *r[SNAP_DIFF_MAX_DEPTH + 1];
	char *dir[SNAP_DIFF_MAX_DEPTH + 1];
};

/*
 * Opens `dir` and every parent up to a full snapshot. Fails naming the file:
 * a missing parent (-ENOENT), a parent whose identity is not the one the
 * child recorded (-ESTALE: rewritten or replaced after the child was
 * written), a directory met twice (-ELOOP: a cycle), more than
 * SNAP_DIFF_MAX_DEPTH diffs (-ELOOP), another memory size (-EINVAL).
 */
int snap_chain_open(const char *dir, struct snap_chain **out, struct fk_err *err);
void snap_chain_close(struct snap_chain *c);

/* The base's memory file descriptor (map it MAP_PRIVATE, then overlay). */
int snap_chain_base_fd(const struct snap_chain *c);

/*
 * Copies each diff's stored pages into `map` (size bytes, laid out like the
 * memory file: the base mapped MAP_PRIVATE), oldest diff first, so the
 * newest page wins. Reads only the pages the diffs store; *bytes (may be
 * NULL) gets how many.
 */
int snap_chain_overlay(const struct snap_chain *c, uint8_t *map, uint64_t size, uint64_t *bytes,
		       struct fk_err *err);

struct snap_compact_stats {
	int links;		/* snapshots in the chain, the base included */
	uint64_t overlay_bytes; /* bytes read from the diffs */
	uint64_t data_bytes;	/* non-zero bytes written to the new memory file */
	uint64_t us;
};

/*
 * Writes `out`, a full snapshot equal to the chain ending at `dir`, with
 * snap_writer_commit (temp directory and rename: an interrupted compaction
 * leaves no `out`, and its temp directory is removed by the next commit
 * there).
 */
int snap_chain_compact(const char *dir, const char *out, struct snap_compact_stats *st,
		       struct fk_err *err);

#endif
