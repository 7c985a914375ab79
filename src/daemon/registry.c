/* SPDX-License-Identifier: MIT */
/* The daemon's registry on SQLite; the API and its reasons are in registry.h. */
#include "daemon/registry.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/*
 * Prepared statements kept for the life of a handle. Preparing one of the registry's
 * statements costs tens of microseconds (parsing, planning over the schema's foreign keys),
 * about as much as running it: a branch makes a dozen of them. A statement checked out by
 * prep() is busy until done() gives it back; a nested use of the same SQL, or one from another
 * thread sharing the handle, gets a fresh, uncached statement, so no caller resets or steps
 * another's. stmt_lock guards the slots only (SQLite serializes the connection itself).
 */
#define REG_STMT_CACHE 48

struct reg_stmt_slot {
	char *sql; /* owned copy: callers may build SQL in a buffer */
	sqlite3_stmt *st;
	bool busy;
};

struct registry {
	sqlite3 *db;
	char path[REG_PATH_MAX];
	bool in_batch; /* registry_batch_begin: each operation is a savepoint inside it */
	pthread_mutex_t stmt_lock;
	int nr_stmts;
	struct reg_stmt_slot stmts[REG_STMT_CACHE];
};

/* Version 1. Text states keep the file readable with the sqlite3 shell. Lineage references that
 * must stay true are foreign keys; a snapshot's parent_vm is history (the snapshot outlives its
 * VM), so it is a plain column. */
static const char schema_v1[] =
    "CREATE TABLE ids (id TEXT PRIMARY KEY) WITHOUT ROWID;"
    "CREATE TABLE vms ("
    " id TEXT PRIMARY KEY,"
    " pid INTEGER NOT NULL,"
    " start_time INTEGER NOT NULL,"
    " boot_id TEXT NOT NULL,"
    " control_sock TEXT NOT NULL,"
    " vsock_sock TEXT NOT NULL,"
    " state TEXT NOT NULL CHECK (state IN ('starting','running','paused','exited','failed')),"
    " parent_vm TEXT REFERENCES vms(id),"
    " zygote TEXT REFERENCES zygotes(id) ON DELETE SET NULL,"
    " snapshot TEXT REFERENCES snapshots(tag),"
    " branched_us INTEGER NOT NULL,"
    " pause_us INTEGER NOT NULL,"
    " image TEXT NOT NULL,"
    " kernel TEXT NOT NULL,"
    " tag TEXT NOT NULL,"
    " created_us INTEGER NOT NULL,"
    " exit_status INTEGER);"
    "CREATE INDEX vms_parent ON vms(parent_vm);"
    "CREATE INDEX vms_zygote ON vms(zygote);"
    "CREATE INDEX vms_snapshot ON vms(snapshot);"
    "CREATE TABLE zygotes ("
    " id TEXT PRIMARY KEY,"
    " vm TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,"
    " pid INTEGER NOT NULL,"
    " start_time INTEGER NOT NULL,"
    " boot_id TEXT NOT NULL,"
    " dir TEXT NOT NULL,"
    " nr_children INTEGER NOT NULL,"
    " created_us INTEGER NOT NULL,"
    " pause_us INTEGER NOT NULL);"
    "CREATE INDEX zygotes_vm ON zygotes(vm);"
    "CREATE TABLE snapshots ("
    " tag TEXT PRIMARY KEY,"
    " path TEXT NOT NULL,"
    " state TEXT NOT NULL CHECK (state IN ('writing','ready','failed')),"
    " parent_vm TEXT,"
    " created_us INTEGER NOT NULL);";

/* Version 2: the image a snapshot's VM booted, kept when that VM is deleted (DELETE
 * /v1/images refuses while a snapshot of it exists). "" in rows from version 1. */
static const char schema_v1_to_v2[] =
    "ALTER TABLE snapshots ADD COLUMN image TEXT NOT NULL DEFAULT '';";

/* Version 3: each VM's network policy and what its VMM reports of its namespace, and the
 * policy of a snapshot's VM (its restored VMs take it). "none" / "" in older rows. */
static const char schema_v2_to_v3[] =
    "ALTER TABLE vms ADD COLUMN net TEXT NOT NULL DEFAULT 'none';"
    "ALTER TABLE vms ADD COLUMN net_netns TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE vms ADD COLUMN net_host_addr TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE snapshots ADD COLUMN net TEXT NOT NULL DEFAULT 'none';";

static const char *const vm_state_names[] = {
    [REG_VM_STARTING] = "starting", [REG_VM_RUNNING] = "running", [REG_VM_PAUSED] = "paused",
    [REG_VM_EXITED] = "exited",	    [REG_VM_FAILED] = "failed",
};
#define NR_VM_STATES (sizeof(vm_state_names) / sizeof(vm_state_names[0]))

static const char *const snap_state_names[] = {
    [REG_SNAP_WRITING] = "writing",
    [REG_SNAP_READY] = "ready",
    [REG_SNAP_FAILED] = "failed",
};
#define NR_SNAP_STATES (sizeof(snap_state_names) / sizeof(snap_state_names[0]))

/* Room for any state name read back from the file, with its NUL. */
#define STATE_NAME_SIZE 16

const char *reg_vm_state_name(enum reg_vm_state s)
{
	return (unsigned)s < NR_VM_STATES ? vm_state_names[s] : "unknown";
}

const char *reg_snap_state_name(enum reg_snap_state s)
{
	return (unsigned)s < NR_SNAP_STATES ? snap_state_names[s] : "unknown";
}

static int state_from_name(const char *const *names, size_t nr, const char *name)
{
	for (size_t i = 0; i < nr; i++)
		if (strcmp(names[i], name) == 0)
			return (int)i;
	return -1;
}

static int64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- SQLite plumbing ---- */

static int sql_errno(struct registry *r)
{
	int rc = sqlite3_extended_errcode(r->db);
	int sys = sqlite3_system_errno(r->db);

	switch (rc & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return EAGAIN;
	case SQLITE_NOMEM:
		return ENOMEM;
	case SQLITE_READONLY:
		return EROFS;
	case SQLITE_FULL:
		return ENOSPC;
	case SQLITE_PERM:
	case SQLITE_AUTH:
		return EACCES;
	case SQLITE_NOTADB:
	case SQLITE_CONSTRAINT:
	case SQLITE_MISMATCH:
		return EINVAL;
	case SQLITE_CANTOPEN:
	case SQLITE_IOERR:
		return sys > 0 ? sys : EIO;
	default:
		return EIO;
	}
}

/* Fails with SQLite's own message after what we were doing. */
static int sql_fail(struct registry *r, struct fk_err *err, const char *what)
{
	int rc = sqlite3_extended_errcode(r->db) & 0xff;
	int sys = sqlite3_system_errno(r->db);

	if ((rc == SQLITE_CANTOPEN || rc == SQLITE_IOERR) && sys > 0)
		return fk_fail(err, sys, "registry %s: %s: %s (%s)", r->path, what,
			       sqlite3_errmsg(r->db), strerror(sys));
	return fk_fail(err, sql_errno(r), "registry %s: %s: %s", r->path, what,
		       sqlite3_errmsg(r->db));
}

static int exec(struct registry *r, const char *sql, struct fk_err *err)
{
	if (sqlite3_exec(r->db, sql, NULL, NULL, NULL) != SQLITE_OK)
		return sql_fail(r, err, sql);
	return 0;
}

/* One statement from the handle's cache (prepared once), or a fresh one; give it back with
 * done(). */
static int prep(struct registry *r, sqlite3_stmt **st, const char *sql, struct fk_err *err)
{
	struct reg_stmt_slot *slot;
	sqlite3_stmt *fresh;

	pthread_mutex_lock(&r->stmt_lock);
	for (int i = 0; i < r->nr_stmts; i++) {
		if (!r->stmts[i].busy && strcmp(r->stmts[i].sql, sql) == 0) {
			r->stmts[i].busy = true;
			*st = r->stmts[i].st;
			pthread_mutex_unlock(&r->stmt_lock);
			return 0;
		}
	}
	pthread_mutex_unlock(&r->stmt_lock);
	if (sqlite3_prepare_v3(r->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &fresh, NULL) !=
	    SQLITE_OK) {
		*st = NULL;
		return sql_fail(r, err, "prepare");
	}
	*st = fresh;
	pthread_mutex_lock(&r->stmt_lock);
	if (r->nr_stmts < REG_STMT_CACHE) {
		slot = &r->stmts[r->nr_stmts];
		slot->sql = strdup(sql);
		if (slot->sql) { /* without memory it simply stays uncached */
			slot->st = fresh;
			slot->busy = true;
			r->nr_stmts++;
		}
	}
	pthread_mutex_unlock(&r->stmt_lock);
	return 0;
}

/* Gives back a statement of prep(): a cached one is reset for its next use, another
 * finalized. NULL is allowed. */
static void done(struct registry *r, sqlite3_stmt *st)
{
	if (!st)
		return;
	for (int i = 0; i < r->nr_stmts; i++) {
		if (r->stmts[i].st == st) {
			sqlite3_reset(st);
			sqlite3_clear_bindings(st);
			r->stmts[i].busy = false;
			return;
		}
	}
	done(r, st);
}

/* exec() of one statement that returns no rows, through the cache. */
static int exec_cached(struct registry *r, const char *sql, struct fk_err *err)
{
	sqlite3_stmt *st;
	int ret = prep(r, &st, sql, err);

	if (ret)
		return ret;
	if (sqlite3_step(st) != SQLITE_DONE)
		ret = sql_fail(r, err, sql);
	done(r, st);
	return ret;
}

/* BEGIN IMMEDIATE takes the write lock up front, so two writers wait for each other (busy
 * timeout) instead of one failing when it upgrades a read transaction. */
static int tx_begin(struct registry *r, bool write, struct fk_err *err)
{
	if (r->in_batch)
		return exec_cached(r, "SAVEPOINT reg_op", err);
	return exec_cached(r, write ? "BEGIN IMMEDIATE" : "BEGIN", err);
}

static int tx_commit(struct registry *r, struct fk_err *err)
{
	return exec_cached(r, r->in_batch ? "RELEASE reg_op" : "COMMIT", err);
}

/* Inside a batch only this operation's changes are undone: the batch's earlier ones stay. */
static void tx_rollback(struct registry *r)
{
	if (sqlite3_get_autocommit(r->db))
		return;
	if (r->in_batch)
		sqlite3_exec(r->db, "ROLLBACK TO reg_op; RELEASE reg_op", NULL, NULL, NULL);
	else
		sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
}

int registry_batch_begin(struct registry *r, struct fk_err *err)
{
	int ret;

	if (r->in_batch)
		return fk_fail(err, EINVAL, "registry %s: a batch is already open", r->path);
	ret = exec_cached(r, "BEGIN IMMEDIATE", err);
	if (ret == 0)
		r->in_batch = true;
	return ret;
}

int registry_batch_end(struct registry *r, struct fk_err *err)
{
	int ret;

	if (!r->in_batch)
		return fk_fail(err, EINVAL, "registry %s: no batch open", r->path);
	r->in_batch = false;
	ret = exec_cached(r, "COMMIT", err);
	if (ret)
		tx_rollback(r);
	return ret;
}

/* Binds s, or NULL for "" when the column is optional. */
static int bind_str(sqlite3_stmt *st, int i, const char *s, bool null_if_empty)
{
	if (null_if_empty && s[0] == '\0')
		return sqlite3_bind_null(st, i);
	return sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
}

/* Steps a statement that returns no rows or whose rows are ignored. */
static int step_done(struct registry *r, sqlite3_stmt *st, const char *what, struct fk_err *err)
{
	int rc;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		;
	if (rc != SQLITE_DONE)
		return sql_fail(r, err, what);
	return 0;
}

/* Copies a text column into dst (NULL reads as ""), refusing values that do not fit. */
static int col_str(sqlite3_stmt *st, int col, char *dst, size_t size, const char *what,
		   struct fk_err *err)
{
	const unsigned char *s = sqlite3_column_text(st, col);
	size_t len = (size_t)sqlite3_column_bytes(st, col);

	if (!s) {
		dst[0] = '\0';
		return 0;
	}
	if (len >= size || memchr(s, '\0', len))
		return fk_fail(err, EBADMSG, "registry: %s: %zu bytes, at most %zu expected", what,
			       len, size - 1);
	memcpy(dst, s, len);
	dst[len] = '\0';
	return 0;
}

/* Makes room for element n of the array *arrp (a pointer to any element type, passed as
 * void * and accessed with memcpy, so no type punning through void **). */
static int grow(void *arrp, size_t *cap, size_t n, size_t elem, struct fk_err *err)
{
	void *arr, *p;
	size_t ncap;

	if (n < *cap)
		return 0;
	ncap = *cap ? *cap * 2 : 16;
	memcpy(&arr, arrp, sizeof(arr));
	p = realloc(arr, ncap * elem);
	if (!p)
		return fk_fail(err, ENOMEM, "registry: list of %zu records", ncap);
	memcpy(arrp, &p, sizeof(p));
	*cap = ncap;
	return 0;
}

/* Reads the current row of a SELECT into one record (a struct reg_vm, reg_zygote, ...). */
typedef int (*row_reader)(sqlite3_stmt *st, void *record, struct fk_err *err);

/* Reads the one row that sql, keyed by ?1, selects; no row is ENOENT, "<kind> <key>: no such
 * <kind>"; what names the look-up in SQLite's errors. */
static int get_row(struct registry *r, const char *sql, const char *key, row_reader read,
		   void *record, const char *kind, const char *what, struct fk_err *err)
{
	sqlite3_stmt *st = NULL;
	int rc, ret = prep(r, &st, sql, err);

	if (ret)
		return ret;
	bind_str(st, 1, key, false);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		ret = read(st, record, err);
	else if (rc == SQLITE_DONE)
		ret = fk_fail(err, ENOENT, "%s %s: no such %s", kind, key, kind);
	else
		ret = sql_fail(r, err, what);
	done(r, st);
	return ret;
}

/* Reads every row that sql selects into a new array *out of elem-byte records (out points to
 * a pointer to the element type, as for grow); ?1, where sql has it, is key (NULL binds SQL
 * NULL). On failure *out is NULL and *n 0. */
static int list_rows(struct registry *r, const char *sql, const char *key, row_reader read,
		     size_t elem, void *out, size_t *n, const char *what, struct fk_err *err)
{
	sqlite3_stmt *st = NULL;
	char *arr = NULL;
	size_t nr = 0, cap = 0;
	int rc = SQLITE_DONE, ret = prep(r, &st, sql, err);

	if (ret == 0 && sqlite3_bind_parameter_count(st) > 0) {
		if (key)
			bind_str(st, 1, key, false);
		else
			sqlite3_bind_null(st, 1);
	}
	while (ret == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		ret = grow(&arr, &cap, nr, elem, err);
		/* Zeroed first: padding and fields a reader leaves alone compare equal (memcmp). */
		if (ret == 0)
			memset(arr + nr * elem, 0, elem);
		if (ret == 0)
			ret = read(st, arr + nr * elem, err);
		nr += ret == 0;
	}
	if (ret == 0 && rc != SQLITE_DONE)
		ret = sql_fail(r, err, what);
	done(r, st);
	if (ret) {
		free(arr);
		arr = NULL;
		nr = 0;
	}
	memcpy(out, &arr, sizeof(arr));
	*n = nr;
	return ret;
}

/* A caller's fixed-size string must hold its NUL. */
static int check_len(const char *what, const char *s, size_t size, struct fk_err *err)
{
	if (strnlen(s, size) >= size)
		return fk_fail(err, ENAMETOOLONG, "%s: longer than %zu bytes", what, size - 1);
	return 0;
}

/* ---- IDs ---- */

/* A new ID never handed out before ("vm-" + 8 hex digits), reserved in the ids table. Runs
 * inside the caller's write transaction. */
static int new_id(struct registry *r, const char *prefix, char out[REG_ID_MAX], struct fk_err *err)
{
	sqlite3_stmt *st = NULL;
	int ret = prep(r, &st, "INSERT OR IGNORE INTO ids(id) VALUES (?1)", err);

	for (int tries = 0; ret == 0 && tries < 32; tries++) {
		uint8_t b[4];

		if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
			ret =
			    fk_fail_errno(err, errno ? errno : EIO, "new %s ID: getrandom", prefix);
			break;
		}
		snprintf(out, REG_ID_MAX, "%s-%02x%02x%02x%02x", prefix, b[0], b[1], b[2], b[3]);
		sqlite3_reset(st);
		sqlite3_bind_text(st, 1, out, -1, SQLITE_TRANSIENT);
		ret = step_done(r, st, "reserve ID", err);
		if (ret == 0 && sqlite3_changes(r->db) == 1)
			goto out;
	}
	if (ret == 0)
		ret = fk_fail(err, EEXIST, "new %s ID: 32 random IDs in a row were taken", prefix);
	out[0] = '\0';
out:
	done(r, st);
	return ret;
}

/* ---- Open and close ---- */

/* Runs a query answering one integer (a pragma, a count). */
static int pragma_int(struct registry *r, const char *sql, int64_t *out, struct fk_err *err)
{
	sqlite3_stmt *st = NULL;
	int rc, ret = prep(r, &st, sql, err);

	if (ret)
		return ret;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*out = sqlite3_column_int64(st, 0);
	else if (rc == SQLITE_DONE)
		ret = fk_fail(err, ENOTSUP, "registry %s: %s: no answer from this SQLite", r->path,
			      sql);
	else
		ret = sql_fail(r, err, sql);
	done(r, st);
	return ret;
}

static int check_version(struct registry *r, int64_t version, struct fk_err *err)
{
	if (version > REG_SCHEMA_VERSION)
		return fk_fail(err, ENOTSUP,
			       "registry %s: schema version %" PRId64
			       " is newer than this forkd's (%d); use the forkd that wrote it",
			       r->path, version, REG_SCHEMA_VERSION);
	if (version < 0)
		return fk_fail(err, EINVAL,
			       "registry %s: schema version %" PRId64 ", not a forkd registry",
			       r->path, version);
	return 0;
}

static int set_wal(struct registry *r, struct fk_err *err)
{
	sqlite3_stmt *st = NULL;
	char mode[16] = "";
	int ret = prep(r, &st, "PRAGMA journal_mode = WAL", err);

	if (ret)
		return ret;
	if (sqlite3_step(st) == SQLITE_ROW)
		ret = col_str(st, 0, mode, sizeof(mode), "journal mode", err);
	else
		ret = sql_fail(r, err, "PRAGMA journal_mode = WAL");
	if (ret == 0 && strcmp(mode, "wal") != 0)
		ret =
		    fk_fail(err, EIO, "registry %s: journal mode is '%s', could not switch to WAL",
			    r->path, mode);
	done(r, st);
	return ret;
}

/* Brings a file of an older version to REG_SCHEMA_VERSION, one step per version, each in the
 * write transaction that also reads the version (two daemons upgrading cannot both apply a
 * step). */
static int upgrade_schema(struct registry *r, struct fk_err *err)
{
	int64_t version = 0;
	char sql[64];
	int ret = tx_begin(r, true, err);

	if (ret)
		return ret;
	ret = pragma_int(r, "PRAGMA user_version", &version, err);
	if (ret == 0 && version == 1)
		ret = exec(r, schema_v1_to_v2, err);
	if (ret == 0 && version >= 1 && version <= 2)
		ret = exec(r, schema_v2_to_v3, err);
	if (ret == 0 && version < REG_SCHEMA_VERSION) {
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", REG_SCHEMA_VERSION);
		ret = exec(r, sql, err);
	}
	if (ret == 0)
		ret = tx_commit(r, err);
	if (ret) {
		tx_rollback(r);
		fk_wrap(err, "registry %s: upgrading schema version %" PRId64 " to %d", r->path,
			version, REG_SCHEMA_VERSION);
	}
	return ret;
}

/* Creates the schema in a new file; leaves a file another forkd initialised meanwhile alone. */
static int init_schema(struct registry *r, struct fk_err *err)
{
	int64_t version, nr_objects;
	int ret = tx_begin(r, true, err);

	if (ret)
		return ret;
	ret = pragma_int(r, "PRAGMA user_version", &version, err);
	if (ret == 0)
		ret = check_version(r, version, err);
	if (ret || version != 0)
		goto out;
	ret = pragma_int(r, "SELECT count(*) FROM sqlite_schema", &nr_objects, err);
	if (ret)
		goto out;
	if (nr_objects != 0) {
		ret = fk_fail(err, EINVAL,
			      "registry %s: an SQLite database with %" PRId64
			      " objects but no schema version: another program's, not a forkd "
			      "registry",
			      r->path, nr_objects);
		goto out;
	}
	ret = exec(r, schema_v1, err);
	if (ret)
		goto out;
	ret = exec(r, "PRAGMA user_version = 1", err);
out:
	if (ret == 0)
		ret = tx_commit(r, err);
	if (ret)
		tx_rollback(r);
	return ret;
}

int registry_open(const char *path, struct registry **out, struct fk_err *err)
{
	struct registry *r = NULL;
	int64_t version, fk_on;
	int rc, ret;

	*out = NULL;
	if (!path || !path[0])
		return fk_fail(err, EINVAL, "registry: empty path");
	if (strlen(path) >= REG_PATH_MAX)
		return fk_fail(err, ENAMETOOLONG, "registry %.64s...: path longer than %d bytes",
			       path, REG_PATH_MAX - 1);
	r = calloc(1, sizeof(*r));
	if (!r)
		return fk_fail(err, ENOMEM, "registry %s", path);
	pthread_mutex_init(&r->stmt_lock, NULL);
	memcpy(r->path, path, strlen(path) + 1);

	rc = sqlite3_open_v2(path, &r->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
	if (rc != SQLITE_OK) {
		ret = r->db ? sql_fail(r, err, "open")
			    : fk_fail(err, ENOMEM, "registry %s: open: out of memory", path);
		goto fail;
	}
	sqlite3_extended_result_codes(r->db, 1);
	sqlite3_busy_timeout(r->db, REG_BUSY_TIMEOUT_MS);

	/* The first read of the file: a file that is not a database fails here. */
	ret = pragma_int(r, "PRAGMA user_version", &version, err);
	if (ret) {
		if ((sqlite3_errcode(r->db) & 0xff) == SQLITE_NOTADB)
			ret = fk_fail(err, EINVAL, "registry %s: not an SQLite database (%s)", path,
				      sqlite3_errmsg(r->db));
		goto fail;
	}
	/* Before anything writes to it: a newer forkd's file stays untouched. */
	ret = check_version(r, version, err);
	if (ret)
		goto fail;
	ret = exec(r, "PRAGMA foreign_keys = ON", err);
	if (ret == 0)
		ret = pragma_int(r, "PRAGMA foreign_keys", &fk_on, err);
	if (ret == 0 && fk_on != 1)
		ret = fk_fail(err, ENOTSUP, "registry %s: this SQLite cannot enforce foreign keys",
			      path);
	if (ret == 0)
		ret = set_wal(r, err);
	/* In WAL mode NORMAL loses at most the last commits on power loss, never consistency. */
	if (ret == 0)
		ret = exec(r, "PRAGMA synchronous = NORMAL", err);
	if (ret == 0 && version == 0)
		ret = init_schema(r, err);
	if (ret == 0 && version < REG_SCHEMA_VERSION)
		ret = upgrade_schema(r, err);
	if (ret)
		goto fail;
	*out = r;
	return 0;
fail:
	registry_close(r);
	return ret;
}

void registry_close(struct registry *r)
{
	if (!r)
		return;
	for (int i = 0; i < r->nr_stmts; i++) {
		sqlite3_finalize(r->stmts[i].st);
		free(r->stmts[i].sql);
	}
	pthread_mutex_destroy(&r->stmt_lock);
	sqlite3_close_v2(r->db);
	free(r);
}

/* ---- VMs ---- */

#define VM_COLS                                                                                    \
	"id, pid, start_time, boot_id, control_sock, vsock_sock, state, parent_vm, zygote, "       \
	"snapshot, branched_us, pause_us, image, kernel, tag, created_us, exit_status, net, "      \
	"net_netns, net_host_addr"
#define VM_NR_COLS 20 /* the columns of VM_COLS: what a query selects after them starts here */

static int read_vm(sqlite3_stmt *st, void *record, struct fk_err *err)
{
	struct reg_vm *vm = record;
	char state[STATE_NAME_SIZE];
	int s, ret;

	memset(vm, 0, sizeof(*vm));
	ret = col_str(st, 0, vm->id, sizeof(vm->id), "VM id", err);
	if (ret == 0)
		ret = col_str(st, 3, vm->proc.boot_id, sizeof(vm->proc.boot_id), "VM boot id", err);
	if (ret == 0)
		ret = col_str(st, 4, vm->control_sock, sizeof(vm->control_sock), "control socket",
			      err);
	if (ret == 0)
		ret = col_str(st, 5, vm->vsock_sock, sizeof(vm->vsock_sock), "vsock socket", err);
	if (ret == 0)
		ret = col_str(st, 6, state, sizeof(state), "VM state", err);
	if (ret == 0)
		ret = col_str(st, 7, vm->parent_vm, sizeof(vm->parent_vm), "parent VM", err);
	if (ret == 0)
		ret = col_str(st, 8, vm->zygote, sizeof(vm->zygote), "zygote", err);
	if (ret == 0)
		ret = col_str(st, 9, vm->snapshot, sizeof(vm->snapshot), "snapshot", err);
	if (ret == 0)
		ret = col_str(st, 12, vm->image, sizeof(vm->image), "image", err);
	if (ret == 0)
		ret = col_str(st, 13, vm->kernel, sizeof(vm->kernel), "kernel", err);
	if (ret == 0)
		ret = col_str(st, 14, vm->tag, sizeof(vm->tag), "VM tag", err);
	if (ret == 0)
		ret = col_str(st, 17, vm->net, sizeof(vm->net), "VM net", err);
	if (ret == 0)
		ret = col_str(st, 18, vm->net_netns, sizeof(vm->net_netns), "VM namespace", err);
	if (ret == 0)
		ret = col_str(st, 19, vm->net_host_addr, sizeof(vm->net_host_addr),
			      "VM host address", err);
	if (ret)
		return ret;
	s = state_from_name(vm_state_names, NR_VM_STATES, state);
	if (s < 0)
		return fk_fail(err, EBADMSG, "registry: VM %s: unknown state '%s'", vm->id, state);
	vm->state = (enum reg_vm_state)s;
	vm->proc.pid = (pid_t)sqlite3_column_int64(st, 1);
	vm->proc.start_time = (uint64_t)sqlite3_column_int64(st, 2);
	vm->branched_us = sqlite3_column_int64(st, 10);
	vm->pause_us = (uint64_t)sqlite3_column_int64(st, 11);
	vm->created_us = sqlite3_column_int64(st, 15);
	vm->exit_status = sqlite3_column_type(st, 16) == SQLITE_NULL
			      ? REG_NO_EXIT
			      : (int)sqlite3_column_int64(st, 16);
	return 0;
}

/* A network policy as the registry stores it ("" stands for none). */
static int check_net(const char *net, struct fk_err *err)
{
	if (strnlen(net, REG_NET_MAX) < REG_NET_MAX &&
	    (!net[0] || !strcmp(net, "none") || !strcmp(net, "host") || !strcmp(net, "nat")))
		return 0;
	return fk_fail(err, EINVAL, "network policy '%.*s': expected none, host or nat",
		       REG_NET_MAX, net);
}

/* Checks the caller's strings and enums before they go into the file. */
static int check_vm(const struct reg_vm *vm, struct fk_err *err)
{
	int ret = 0;

	if ((unsigned)vm->state >= NR_VM_STATES)
		return fk_fail(err, EINVAL, "VM: state %d is not a VM state", (int)vm->state);
	if (vm->proc.pid < 0)
		return fk_fail(err, EINVAL, "VM: pid %d is negative", (int)vm->proc.pid);
	if (ret == 0)
		ret = check_len("VM boot id", vm->proc.boot_id, sizeof(vm->proc.boot_id), err);
	if (ret == 0)
		ret = check_len("VM control socket path", vm->control_sock,
				sizeof(vm->control_sock), err);
	if (ret == 0)
		ret =
		    check_len("VM vsock socket path", vm->vsock_sock, sizeof(vm->vsock_sock), err);
	if (ret == 0)
		ret = check_len("VM parent", vm->parent_vm, sizeof(vm->parent_vm), err);
	if (ret == 0)
		ret = check_len("VM zygote", vm->zygote, sizeof(vm->zygote), err);
	if (ret == 0)
		ret = check_len("VM snapshot", vm->snapshot, sizeof(vm->snapshot), err);
	if (ret == 0)
		ret = check_len("VM image", vm->image, sizeof(vm->image), err);
	if (ret == 0)
		ret = check_len("VM kernel path", vm->kernel, sizeof(vm->kernel), err);
	if (ret == 0)
		ret = check_len("VM tag", vm->tag, sizeof(vm->tag), err);
	if (ret == 0 && vm->tag[0] && registry_tag_check(vm->tag, err))
		ret = fk_wrap(err, "VM tag");
	if (ret == 0)
		ret = check_net(vm->net, err);
	if (ret == 0)
		ret = check_len("VM namespace", vm->net_netns, sizeof(vm->net_netns), err);
	if (ret == 0)
		ret =
		    check_len("VM host address", vm->net_host_addr, sizeof(vm->net_host_addr), err);
	return ret;
}

/* 1 if a row matches, 0 if none, -errno. */
static int exists(struct registry *r, const char *sql, const char *key, struct fk_err *err)
{
	sqlite3_stmt *st = NULL;
	int rc, ret = prep(r, &st, sql, err);

	if (ret)
		return ret;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
	rc = sqlite3_step(st);
	ret = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : sql_fail(r, err, "look up");
	done(r, st);
	return ret;
}

static int read_zygote_owner(sqlite3_stmt *st, void *record, struct fk_err *err)
{
	return col_str(st, 0, record, REG_ID_MAX, "zygote owner", err);
}

static int read_snapshot_state(sqlite3_stmt *st, void *record, struct fk_err *err)
{
	return col_str(st, 0, record, STATE_NAME_SIZE, "snapshot state", err);
}

/* The lineage a new VM claims must be there: parent, its zygote, a ready snapshot. */
static int check_vm_origin(struct registry *r, const struct reg_vm *vm, struct fk_err *err)
{
	char owner[REG_ID_MAX], state[STATE_NAME_SIZE];
	int ret = 0;

	if (vm->zygote[0] && !vm->parent_vm[0])
		return fk_fail(err, EINVAL,
			       "VM: zygote %s given without the parent VM it belongs to",
			       vm->zygote);
	if (vm->parent_vm[0] && vm->snapshot[0])
		return fk_fail(err, EINVAL,
			       "VM: both a parent VM (%s) and a snapshot (%s): a VM is branched or "
			       "spawned, not both",
			       vm->parent_vm, vm->snapshot);
	if (vm->parent_vm[0]) {
		ret = exists(r, "SELECT 1 FROM vms WHERE id = ?1", vm->parent_vm, err);
		if (ret == 0)
			return fk_fail(err, ENOENT, "parent VM %s: no such VM", vm->parent_vm);
		if (ret < 0)
			return ret;
		ret = 0;
	}
	if (vm->zygote[0]) {
		ret = get_row(r, "SELECT vm FROM zygotes WHERE id = ?1", vm->zygote,
			      read_zygote_owner, owner, "zygote", "look up zygote", err);
		if (ret == 0 && strcmp(owner, vm->parent_vm) != 0)
			ret =
			    fk_fail(err, EINVAL, "zygote %s belongs to VM %s, not to parent VM %s",
				    vm->zygote, owner, vm->parent_vm);
		if (ret)
			return ret;
	}
	if (vm->snapshot[0]) {
		ret = get_row(r, "SELECT state FROM snapshots WHERE tag = ?1", vm->snapshot,
			      read_snapshot_state, state, "snapshot", "look up snapshot", err);
		if (ret == 0 && strcmp(state, "ready") != 0)
			ret = fk_fail(err, EINVAL,
				      "snapshot %s is %s, not ready: no VM can start from it",
				      vm->snapshot, state);
	}
	return ret;
}

int registry_vm_ids_reserve(struct registry *r, size_t n, char (*out)[REG_ID_MAX],
			    struct fk_err *err)
{
	int ret = tx_begin(r, true, err);

	for (size_t i = 0; ret == 0 && i < n; i++)
		ret = new_id(r, "vm", out[i], err);
	if (ret == 0)
		ret = tx_commit(r, err);
	if (ret)
		tx_rollback(r);
	return ret;
}

static int vm_add(struct registry *r, struct reg_vm *vm, bool reserved, struct fk_err *err);

int registry_vm_add(struct registry *r, struct reg_vm *vm, struct fk_err *err)
{
	return vm_add(r, vm, false, err);
}

int registry_vm_add_reserved(struct registry *r, struct reg_vm *vm, struct fk_err *err)
{
	int ret = check_len("VM id", vm->id, sizeof(vm->id), err);

	return ret ? ret : vm_add(r, vm, true, err);
}

static int vm_add(struct registry *r, struct reg_vm *vm, bool reserved, struct fk_err *err)
{
	sqlite3_stmt *st = NULL;
	int ret;

	if (!reserved)
		vm->id[0] = '\0';
	ret = check_vm(vm, err);
	if (ret)
		return ret;
	ret = tx_begin(r, true, err);
	if (ret)
		return ret;
	ret = check_vm_origin(r, vm, err);
	if (ret == 0 && !reserved)
		ret = new_id(r, "vm", vm->id, err);
	/* a reserved ID is in ids (registry_vm_ids_reserve); one in vms already fails the insert */
	if (ret == 0 && reserved &&
	    (ret = exists(r, "SELECT 1 FROM ids WHERE id = ?1", vm->id, err)) >= 0)
		ret =
		    ret ? 0
			: fk_fail(err, EINVAL,
				  "VM id '%s': expected one registry_vm_ids_reserve gave", vm->id);
	if (ret == 0)
		ret = prep(r, &st,
			   "INSERT INTO vms (" VM_COLS
			   ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, "
			   "?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
			   err);
	if (ret)
		goto out;
	vm->created_us = now_us();
	bind_str(st, 1, vm->id, false);
	sqlite3_bind_int64(st, 2, vm->proc.pid);
	sqlite3_bind_int64(st, 3, (int64_t)vm->proc.start_time);
	bind_str(st, 4, vm->proc.boot_id, false);
	bind_str(st, 5, vm->control_sock, false);
	bind_str(st, 6, vm->vsock_sock, false);
	bind_str(st, 7, vm_state_names[vm->state], false);
	bind_str(st, 8, vm->parent_vm, true);
	bind_str(st, 9, vm->zygote, true);
	bind_str(st, 10, vm->snapshot, true);
	sqlite3_bind_int64(st, 11, vm->branched_us);
	sqlite3_bind_int64(st, 12, (int64_t)vm->pause_us);
	bind_str(st, 13, vm->image, false);
	bind_str(st, 14, vm->kernel, false);
	bind_str(st, 15, vm->tag, false);
	sqlite3_bind_int64(st, 16, vm->created_us);
	if (vm->exit_status == REG_NO_EXIT)
		sqlite3_bind_null(st, 17);
	else
		sqlite3_bind_int64(st, 17, vm->exit_status);
	bind_str(st, 18, vm->net[0] ? vm->net : "none", false);
	bind_str(st, 19, vm->net_netns, false);
	bind_str(st, 20, vm->net_host_addr, false);
	ret = step_done(r, st, "add VM", err);
	if (ret == 0)
		ret = tx_commit(r, err);
out:
	done(r, st);
	if (ret) {
		tx_rollback(r);
		if (!reserved)
			vm->id[0] = '\0';
	}
	return ret;
}

int registry_vm_update(struct registry *r, const struct reg_vm *vm, struct fk_err *err)
{
	sqlite3_stmt *st = NULL;
	int ret = check_len("VM id", vm->id, sizeof(vm->id), err);

	if (ret == 0)
		ret = check_vm(vm, err);
	if (ret == 0)
		ret =
		    prep(r, &st,
			 "UPDATE vms SET pid = ?2, start_time = ?3, boot_id = ?4, control_sock = "
			 "?5, vsock_sock = ?6, state = ?7, pause_us = ?8, image = ?9, kernel = "
			 "?10, tag = ?11, exit_status = ?12, net_netns = ?13, net_host_addr = ?14 "
			 "WHERE id = ?1",
			 err);
	if (ret)
		return ret;
	bind_str(st, 1, vm->id, false);
	sqlite3_bind_int64(st, 2, vm->proc.pid);
	sqlite3_bind_int64(st, 3, (int64_t)vm->proc.start_time);
	bind_str(st, 4, vm->proc.boot_id, false);
	bind_str(st, 5, vm->control_sock, false);
	bind_str(st, 6, vm->vsock_sock, false);
	bind_str(st, 7, vm_state_names[vm->state], false);
	sqlite3_bind_int64(st, 8, (int64_t)vm->pause_us);
	bind_str(st, 9, vm->image, false);
	bind_str(st, 10, vm->kernel, false);
	bind_str(st, 11, vm->tag, false);
	if (vm->exit_status == REG_NO_EXIT)
		sqlite3_bind_null(st, 12);
	else
		sqlite3_bind_int64(st, 12, vm->exit_status);
	bind_str(st, 13, vm->net_netns, false);
	bind_str(st, 14, vm->net_host_addr, false);
	ret = step_done(r, st, "update VM", err);
	if (ret == 0 && sqlite3_changes(r->db) == 0)
		ret = fk_fail(err, ENOENT, "VM %s: no such VM", vm->id);
	done(r, st);
	return ret;
}

int registry_vm_set_state(struct registry *r, const char *id, enum reg_vm_state state,
			  int exit_status, struct fk_err *err)
{
	sqlite3_stmt *st = NULL;
	int ret;

	if ((unsigned)state >= NR_VM_STATES)
		return fk_fail(err, EINVAL, "VM %s: state %d is not a VM state", id, (int)state);
	ret = prep(r, &st, "UPDATE vms SET state = ?2, exit_status = ?3 WHERE id = ?1", err);
	if (ret)
		return ret;
	bind_str(st, 1, id, false);
	bind_str(st, 2, vm_state_names[state], false);
	if (exit_status == REG_NO_EXIT || (state != REG_VM_EXITED && state != REG_VM_FAILED))
		sqlite3_bind_null(st, 3);
	else
		sqlite3_bind_int64(st, 3, exit_status);
	ret = step_done(r, st, "set VM state", err);
	if (ret == 0 && sqlite3_changes(r->db) == 0)
		ret = fk_fail(err, ENOENT, "VM %s: no such VM", id);
	done(r, st);
	return ret;
}

int registry_vm_get(struct registry *r, const char *id, struct reg_vm *out, struct fk_err *err)
{
	return get_row(r, "SELECT " VM_COLS " FROM vms WHERE id = ?1", id, read_vm, out, "VM",
		       "get VM", err);
}

int registry_vm_list(struct registry *r, struct reg_vm **out, size_t *n, struct fk_err *err)
{
	return list_rows(r, "SELECT " VM_COLS " FROM vms ORDER BY created_us, rowid", NULL, read_vm,
			 sizeof(**out), out, n, "list VMs", err);
}

/* ---- Deletes with dependents ---- */

/* One VM id, the first column of a row. */
static int read_id(sqlite3_stmt *st, void *record, struct fk_err *err)
{
	return col_str(st, 0, record, REG_ID_MAX, "VM id", err);
}

/* "vm-1, vm-2, ... and N more" into buf, skipping the first `skip` ids. */
static void name_ids(char *buf, size_t size, const struct reg_ids *ids, size_t skip)
{
	size_t len = 0;

	buf[0] = '\0';
	for (size_t i = skip; i < ids->n; i++) {
		int w;

		if (len + REG_ID_MAX + 24 > size) {
			snprintf(buf + len, size - len, " and %zu more", ids->n - i);
			return;
		}
		w = snprintf(buf + len, size - len, "%s%s", i > skip ? ", " : "", ids->ids[i]);
		len += (size_t)w;
	}
}

/* The VMs that descend from the seed rows (parent before child: breadth first), and the
 * statement that deletes exactly them. ?1 is the VM id or the snapshot tag. */
#define DESCENDANTS(seed)                                                                          \
	"WITH RECURSIVE d(id) AS (" seed " UNION SELECT v.id FROM vms v JOIN d ON v.parent_vm = "  \
	"d.id) "
#define VM_SEED	  "SELECT id FROM vms WHERE id = ?1"
#define SNAP_SEED "SELECT id FROM vms WHERE snapshot = ?1"

/* The VM ids that the query (keyed by ?1) returns. */
static int find_ids(struct registry *r, const char *sql, const char *key, struct reg_ids *found,
		    struct fk_err *err)
{
	return list_rows(r, sql, key, read_id, sizeof(*found->ids), &found->ids, &found->n,
			 "find dependents", err);
}

static int run_keyed(struct registry *r, const char *sql, const char *key, const char *what,
		     struct fk_err *err)
{
	sqlite3_stmt *st = NULL;
	int ret = prep(r, &st, sql, err);

	if (ret)
		return ret;
	bind_str(st, 1, key, false);
	ret = step_done(r, st, what, err);
	done(r, st);
	return ret;
}

/* Ends a delete's transaction after ret: committed, the deleted VMs' ids go to removed (if
 * wanted); failed, it is rolled back. */
static int end_delete(struct registry *r, int ret, struct reg_ids *ids, struct reg_ids *removed,
		      struct fk_err *err)
{
	if (ret == 0)
		ret = tx_commit(r, err);
	if (ret) {
		tx_rollback(r);
		free(ids->ids);
	} else if (removed) {
		*removed = *ids;
	} else {
		free(ids->ids);
	}
	ids->ids = NULL;
	ids->n = 0;
	return ret;
}

int registry_vm_delete(struct registry *r, const char *id, bool cascade, struct reg_ids *removed,
		       struct fk_err *err)
{
	struct reg_ids ids = {0};
	char names[320];
	int ret;

	if (removed)
		*removed = (struct reg_ids){0};
	ret = tx_begin(r, true, err);
	if (ret)
		return ret;
	ret = find_ids(r, DESCENDANTS(VM_SEED) "SELECT id FROM d", id, &ids, err);
	if (ret)
		goto out;
	if (ids.n == 0) {
		ret = fk_fail(err, ENOENT, "VM %s: no such VM", id);
		goto out;
	}
	if (ids.n > 1 && !cascade) {
		name_ids(names, sizeof(names), &ids, 1);
		ret = fk_fail(err, EBUSY,
			      "delete VM %s: %zu dependent VM%s descended from it (%s); delete %s "
			      "first or cascade",
			      id, ids.n - 1, ids.n - 1 == 1 ? "" : "s", names,
			      ids.n - 1 == 1 ? "it" : "them");
		goto out;
	}
	ret = run_keyed(r, DESCENDANTS(VM_SEED) "DELETE FROM vms WHERE id IN d", id, "delete VMs",
			err);
out:
	return end_delete(r, ret, &ids, removed, err);
}

/* ---- Lineage ---- */

/* A VM and, after its columns, its depth in the tree. */
static int read_lineage_node(sqlite3_stmt *st, void *record, struct fk_err *err)
{
	struct reg_lineage_node *node = record;
	int ret = read_vm(st, &node->vm, err);

	if (ret == 0)
		node->depth = (unsigned)sqlite3_column_int64(st, VM_NR_COLS);
	return ret;
}

int registry_lineage(struct registry *r, struct reg_lineage_node **out, size_t *n,
		     struct fk_err *err)
{
	/* The sort key is the path of (created, rowid) from the root: '/' sorts before the
	 * digits, so a parent precedes its subtree, which precedes the parent's next sibling. */
	static const char sql[] =
	    "WITH RECURSIVE tree(tid, depth, sortkey) AS ("
	    " SELECT id, 0, printf('%020d.%012d', created_us, rowid) FROM vms"
	    " WHERE parent_vm IS NULL"
	    " UNION ALL"
	    " SELECT v.id, t.depth + 1,"
	    " t.sortkey || '/' || printf('%020d.%012d', v.created_us, v.rowid)"
	    " FROM vms v JOIN tree t ON v.parent_vm = t.tid)"
	    " SELECT " VM_COLS ", tree.depth FROM tree JOIN vms ON vms.id = tree.tid"
	    " ORDER BY tree.sortkey";
	struct reg_lineage_node *nodes = NULL;
	size_t nr = 0;
	int64_t total = 0;
	int ret;

	*out = NULL;
	*n = 0;
	ret = tx_begin(r, false, err);
	if (ret)
		return ret;
	ret =
	    list_rows(r, sql, NULL, read_lineage_node, sizeof(*nodes), &nodes, &nr, "lineage", err);
	if (ret == 0)
		ret = pragma_int(r, "SELECT count(*) FROM vms", &total, err);
	if (ret == 0 && (size_t)total != nr)
		ret = fk_fail(err, EBADMSG,
			      "registry %s: %zu of %" PRId64
			      " VMs have no root ancestor (a parent cycle): damaged file",
			      r->path, (size_t)total - nr, total);
	if (ret == 0)
		ret = tx_commit(r, err);
	if (ret) {
		tx_rollback(r);
		free(nodes);
		return ret;
	}
	/* A node is its parent's last child if its subtree ends at a shallower node or the end. */
	for (size_t i = 0; i < nr; i++) {
		size_t j = i + 1;

		while (j < nr && nodes[j].depth > nodes[i].depth)
			j++;
		nodes[i].last_sibling = j == nr || nodes[j].depth < nodes[i].depth;
	}
	*out = nodes;
	*n = nr;
	return 0;
}

/* ---- Zygotes ---- */

#define ZYGOTE_COLS "id, vm, pid, start_time, boot_id, dir, nr_children, created_us, pause_us"

static int read_zygote(sqlite3_stmt *st, void *record, struct fk_err *err)
{
	struct reg_zygote *z = record;
	int ret;

	memset(z, 0, sizeof(*z));
	ret = col_str(st, 0, z->id, sizeof(z->id), "zygote id", err);
	if (ret == 0)
		ret = col_str(st, 1, z->vm, sizeof(z->vm), "zygote VM", err);
	if (ret == 0)
		ret =
		    col_str(st, 4, z->proc.boot_id, sizeof(z->proc.boot_id), "zygote boot id", err);
	if (ret == 0)
		ret = col_str(st, 5, z->dir, sizeof(z->dir), "zygote dir", err);
	if (ret)
		return ret;
	z->proc.pid = (pid_t)sqlite3_column_int64(st, 2);
	z->proc.start_time = (uint64_t)sqlite3_column_int64(st, 3);
	z->nr_children = (uint32_t)sqlite3_column_int64(st, 6);
	z->created_us = sqlite3_column_int64(st, 7);
	z->pause_us = (uint64_t)sqlite3_column_int64(st, 8);
	return 0;
}

int registry_zygote_add(struct registry *r, struct reg_zygote *z, struct fk_err *err)
{
	sqlite3_stmt *st = NULL;
	int ret;

	z->id[0] = '\0';
	ret = check_len("zygote VM", z->vm, sizeof(z->vm), err);
	if (ret == 0)
		ret = check_len("zygote boot id", z->proc.boot_id, sizeof(z->proc.boot_id), err);
	if (ret == 0)
		ret = check_len("zygote dir", z->dir, sizeof(z->dir), err);
	if (ret)
		return ret;
	if (z->proc.pid < 0)
		return fk_fail(err, EINVAL, "zygote: pid %d is negative", (int)z->proc.pid);
	ret = tx_begin(r, true, err);
	if (ret)
		return ret;
	ret = exists(r, "SELECT 1 FROM vms WHERE id = ?1", z->vm, err);
	if (ret == 0)
		ret = fk_fail(err, ENOENT, "zygote: its VM %s: no such VM", z->vm);
	ret = ret == 1 ? new_id(r, "zy", z->id, err) : ret;
	if (ret == 0)
		ret = prep(r, &st,
			   "INSERT INTO zygotes (" ZYGOTE_COLS
			   ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
			   err);
	if (ret)
		goto out;
	z->created_us = now_us();
	bind_str(st, 1, z->id, false);
	bind_str(st, 2, z->vm, false);
	sqlite3_bind_int64(st, 3, z->proc.pid);
	sqlite3_bind_int64(st, 4, (int64_t)z->proc.start_time);
	bind_str(st, 5, z->proc.boot_id, false);
	bind_str(st, 6, z->dir, false);
	sqlite3_bind_int64(st, 7, z->nr_children);
	sqlite3_bind_int64(st, 8, z->created_us);
	sqlite3_bind_int64(st, 9, (int64_t)z->pause_us);
	ret = step_done(r, st, "add zygote", err);
	if (ret == 0)
		ret = tx_commit(r, err);
out:
	done(r, st);
	if (ret) {
		tx_rollback(r);
		z->id[0] = '\0';
	}
	return ret;
}

int registry_zygote_set_children(struct registry *r, const char *id, uint32_t nr_children,
				 struct fk_err *err)
{
	sqlite3_stmt *st = NULL;
	int ret = prep(r, &st, "UPDATE zygotes SET nr_children = ?2 WHERE id = ?1", err);

	if (ret)
		return ret;
	bind_str(st, 1, id, false);
	sqlite3_bind_int64(st, 2, nr_children);
	ret = step_done(r, st, "set zygote children", err);
	if (ret == 0 && sqlite3_changes(r->db) == 0)
		ret = fk_fail(err, ENOENT, "zygote %s: no such zygote", id);
	done(r, st);
	return ret;
}

int registry_zygote_get(struct registry *r, const char *id, struct reg_zygote *out,
			struct fk_err *err)
{
	return get_row(r, "SELECT " ZYGOTE_COLS " FROM zygotes WHERE id = ?1", id, read_zygote, out,
		       "zygote", "get zygote", err);
}

int registry_zygote_list(struct registry *r, const char *vm, struct reg_zygote **out, size_t *n,
			 struct fk_err *err)
{
	return list_rows(r,
			 "SELECT " ZYGOTE_COLS " FROM zygotes WHERE ?1 IS NULL OR vm = ?1"
			 " ORDER BY created_us, rowid",
			 vm, read_zygote, sizeof(**out), out, n, "list zygotes", err);
}

int registry_zygote_delete(struct registry *r, const char *id, struct fk_err *err)
{
	int ret = run_keyed(r, "DELETE FROM zygotes WHERE id = ?1", id, "delete zygote", err);

	if (ret == 0 && sqlite3_changes(r->db) == 0)
		ret = fk_fail(err, ENOENT, "zygote %s: no such zygote", id);
	return ret;
}

/* ---- Snapshots ---- */

int registry_tag_check(const char *tag, struct fk_err *err)
{
	size_t len;

	if (!tag || !tag[0])
		return fk_fail(err, EINVAL,
			       "tag: empty; expected 1 to %d characters of A-Z a-z 0-9 . _ -",
			       REG_TAG_MAX);
	len = strnlen(tag, REG_TAG_MAX + 1);
	if (len > REG_TAG_MAX)
		return fk_fail(err, EINVAL, "tag '%.*s...': longer than %d characters", 16, tag,
			       REG_TAG_MAX);
	if (strcmp(tag, ".") == 0 || strcmp(tag, "..") == 0)
		return fk_fail(err, EINVAL, "tag '%s': a directory name, not a tag", tag);
	if (tag[0] == '-')
		return fk_fail(err, EINVAL, "tag '%s': starts with '-' (would read as an option)",
			       tag);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)tag[i];

		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    c == '.' || c == '_' || c == '-')
			continue;
		if (c == '/')
			return fk_fail(err, EINVAL, "tag '%s': contains '/' (a path, not a tag)",
				       tag);
		return fk_fail(err, EINVAL,
			       "tag '%s': byte 0x%02x at %zu; expected only A-Z a-z 0-9 . _ -", tag,
			       c, i);
	}
	return 0;
}

#define SNAP_COLS "tag, path, state, parent_vm, created_us, image, net"

static int read_snapshot(sqlite3_stmt *st, void *record, struct fk_err *err)
{
	struct reg_snapshot *s = record;
	char state[STATE_NAME_SIZE];
	int ret, v;

	memset(s, 0, sizeof(*s));
	ret = col_str(st, 0, s->tag, sizeof(s->tag), "snapshot tag", err);
	if (ret == 0)
		ret = col_str(st, 1, s->path, sizeof(s->path), "snapshot path", err);
	if (ret == 0)
		ret = col_str(st, 2, state, sizeof(state), "snapshot state", err);
	if (ret == 0)
		ret = col_str(st, 3, s->parent_vm, sizeof(s->parent_vm), "snapshot VM", err);
	if (ret == 0)
		ret = col_str(st, 5, s->image, sizeof(s->image), "snapshot image", err);
	if (ret == 0)
		ret = col_str(st, 6, s->net, sizeof(s->net), "snapshot net", err);
	if (ret)
		return ret;
	v = state_from_name(snap_state_names, NR_SNAP_STATES, state);
	if (v < 0)
		return fk_fail(err, EBADMSG, "registry: snapshot %s: unknown state '%s'", s->tag,
			       state);
	s->state = (enum reg_snap_state)v;
	s->created_us = sqlite3_column_int64(st, 4);
	return 0;
}

int registry_snapshot_add(struct registry *r, struct reg_snapshot *s, struct fk_err *err)
{
	sqlite3_stmt *st = NULL;
	int ret = registry_tag_check(s->tag, err);

	if (ret)
		return fk_wrap(err, "snapshot");
	ret = check_len("snapshot path", s->path, sizeof(s->path), err);
	if (ret == 0)
		ret = check_len("snapshot VM", s->parent_vm, sizeof(s->parent_vm), err);
	if (ret == 0)
		ret = check_len("snapshot image", s->image, sizeof(s->image), err);
	if (ret == 0 && check_net(s->net, err))
		ret = fk_wrap(err, "snapshot %s", s->tag);
	if (ret == 0 && !s->path[0])
		ret = fk_fail(err, EINVAL, "snapshot %s: empty path", s->tag);
	if (ret)
		return ret;
	ret = tx_begin(r, true, err);
	if (ret)
		return ret;
	ret = exists(r, "SELECT 1 FROM snapshots WHERE tag = ?1", s->tag, err);
	if (ret == 1)
		ret = fk_fail(err, EEXIST, "snapshot %s: the tag is taken", s->tag);
	if (ret == 0 && s->parent_vm[0]) {
		ret = exists(r, "SELECT 1 FROM vms WHERE id = ?1", s->parent_vm, err);
		ret = ret == 0 ? fk_fail(err, ENOENT, "snapshot %s: its VM %s: no such VM", s->tag,
					 s->parent_vm)
		      : ret == 1 ? 0
				 : ret;
	}
	if (ret == 0)
		ret = prep(r, &st,
			   "INSERT INTO snapshots (" SNAP_COLS
			   ") VALUES (?1, ?2, 'writing', ?3, ?4, ?5, ?6)",
			   err);
	if (ret)
		goto out;
	s->state = REG_SNAP_WRITING;
	s->created_us = now_us();
	bind_str(st, 1, s->tag, false);
	bind_str(st, 2, s->path, false);
	bind_str(st, 3, s->parent_vm, true);
	sqlite3_bind_int64(st, 4, s->created_us);
	bind_str(st, 5, s->image, false);
	bind_str(st, 6, s->net[0] ? s->net : "none", false);
	ret = step_done(r, st, "add snapshot", err);
	if (ret == 0)
		ret = tx_commit(r, err);
out:
	done(r, st);
	if (ret)
		tx_rollback(r);
	return ret;
}

int registry_snapshot_get(struct registry *r, const char *tag, struct reg_snapshot *out,
			  struct fk_err *err)
{
	return get_row(r, "SELECT " SNAP_COLS " FROM snapshots WHERE tag = ?1", tag, read_snapshot,
		       out, "snapshot", "get snapshot", err);
}

/* writing -> to; anything else is refused, naming the state it is in. */
static int snapshot_finish(struct registry *r, const char *tag, enum reg_snap_state to,
			   struct fk_err *err)
{
	struct reg_snapshot s;
	sqlite3_stmt *st = NULL;
	int ret = prep(r, &st,
		       "UPDATE snapshots SET state = ?2 WHERE tag = ?1 AND state = 'writing'", err);

	if (ret)
		return ret;
	bind_str(st, 1, tag, false);
	bind_str(st, 2, snap_state_names[to], false);
	ret = step_done(r, st, "set snapshot state", err);
	done(r, st);
	if (ret || sqlite3_changes(r->db) == 1)
		return ret;
	ret = registry_snapshot_get(r, tag, &s, err);
	if (ret)
		return ret;
	return fk_fail(err, EINVAL,
		       "snapshot %s is %s: only a snapshot being written can become %s", tag,
		       snap_state_names[s.state], snap_state_names[to]);
}

int registry_snapshot_mark_ready(struct registry *r, const char *tag, struct fk_err *err)
{
	return snapshot_finish(r, tag, REG_SNAP_READY, err);
}

int registry_snapshot_mark_failed(struct registry *r, const char *tag, struct fk_err *err)
{
	return snapshot_finish(r, tag, REG_SNAP_FAILED, err);
}

int registry_snapshot_list(struct registry *r, bool ready_only, struct reg_snapshot **out,
			   size_t *n, struct fk_err *err)
{
	return list_rows(r,
			 ready_only ? "SELECT " SNAP_COLS " FROM snapshots WHERE state = 'ready'"
				      " ORDER BY created_us, rowid"
				    : "SELECT " SNAP_COLS
				      " FROM snapshots ORDER BY created_us, rowid",
			 NULL, read_snapshot, sizeof(**out), out, n, "list snapshots", err);
}

int registry_snapshot_delete(struct registry *r, const char *tag, bool cascade,
			     struct reg_ids *removed, struct fk_err *err)
{
	struct reg_ids ids = {0};
	char names[320];
	int ret;

	if (removed)
		*removed = (struct reg_ids){0};
	ret = tx_begin(r, true, err);
	if (ret)
		return ret;
	ret = exists(r, "SELECT 1 FROM snapshots WHERE tag = ?1", tag, err);
	if (ret == 0)
		ret = fk_fail(err, ENOENT, "snapshot %s: no such snapshot", tag);
	if (ret == 1)
		ret = find_ids(r, DESCENDANTS(SNAP_SEED) "SELECT id FROM d", tag, &ids, err);
	if (ret)
		goto out;
	if (ids.n > 0 && !cascade) {
		name_ids(names, sizeof(names), &ids, 0);
		ret = fk_fail(err, EBUSY,
			      "delete snapshot %s: %zu dependent VM%s spawned from it or descended "
			      "from those (%s); delete %s first or cascade",
			      tag, ids.n, ids.n == 1 ? "" : "s", names, ids.n == 1 ? "it" : "them");
		goto out;
	}
	if (ids.n > 0)
		ret = run_keyed(r, DESCENDANTS(SNAP_SEED) "DELETE FROM vms WHERE id IN d", tag,
				"delete VMs", err);
	if (ret == 0)
		ret = run_keyed(r, "DELETE FROM snapshots WHERE tag = ?1", tag, "delete snapshot",
				err);
out:
	return end_delete(r, ret, &ids, removed, err);
}

/* ---- Processes ---- */

static int read_small(const char *path, char *buf, size_t size, int *errnum)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t len = 0;

	if (fd < 0) {
		*errnum = errno;
		return -1;
	}
	while (len < size - 1) {
		ssize_t n = read(fd, buf + len, size - 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			*errnum = errno;
			close(fd);
			return -1;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	return 0;
}

/*
 * The kernel's boot id, read once per process: it cannot change while this
 * process runs, and every branch and spawn probes a few processes (bench/api.sh).
 * Written once under pthread_once, read-only after.
 */
static char boot_id[REG_BOOT_ID_MAX];
static int boot_id_errno;
static pthread_once_t boot_id_once = PTHREAD_ONCE_INIT;

static void read_boot_id(void)
{
	if (read_small("/proc/sys/kernel/random/boot_id", boot_id, sizeof(boot_id),
		       &boot_id_errno) == 0)
		boot_id[strcspn(boot_id, "\n")] = '\0';
	else
		boot_id[0] = '\0';
}

int registry_proc_probe(pid_t pid, struct reg_proc *out, struct fk_err *err)
{
	char path[64], buf[4096], *p, *end;
	int errnum = 0;

	memset(out, 0, sizeof(*out));
	if (pid <= 0)
		return fk_fail(err, EINVAL, "process %d: not a process id", (int)pid);
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (read_small(path, buf, sizeof(buf), &errnum))
		return errnum == ENOENT
			   ? fk_fail(err, ESRCH, "process %d: no such process", (int)pid)
			   : fk_fail_errno(err, errnum, "process %d: %s", (int)pid, path);
	/* Field 2 (comm) may hold spaces and ')': fields 3.. start after the last ')'. */
	p = strrchr(buf, ')');
	for (int field = 2; p && field < 22; field++) {
		p = strchr(p + 1, ' ');
	}
	if (!p)
		return fk_fail(err, EBADMSG, "process %d: %s: fewer than 22 fields", (int)pid,
			       path);
	errno = 0;
	out->start_time = strtoull(p + 1, &end, 10);
	if (errno || end == p + 1 || (*end != ' ' && *end != '\n' && *end != '\0'))
		return fk_fail(err, EBADMSG, "process %d: %s: field 22 is not a start time",
			       (int)pid, path);
	pthread_once(&boot_id_once, read_boot_id);
	if (!boot_id[0])
		return fk_fail_errno(err, boot_id_errno ? boot_id_errno : EIO,
				     "process %d: /proc/sys/kernel/random/boot_id", (int)pid);
	memcpy(out->boot_id, boot_id, sizeof(out->boot_id));
	out->pid = pid;
	return 0;
}

int registry_proc_still_same(const struct reg_proc *p, struct fk_err *err)
{
	struct reg_proc now;
	int ret;

	if (p->pid <= 0)
		return 0;
	ret = registry_proc_probe(p->pid, &now, err);
	if (ret == -ESRCH)
		return 0;
	if (ret)
		return ret;
	if (now.start_time != p->start_time)
		return 0;
	return p->boot_id[0] == '\0' || strcmp(now.boot_id, p->boot_id) == 0;
}
