/* SPDX-License-Identifier: MIT */
/*
 * The on-disk snapshot format: a directory holding `state` (a versioned,
 * checksummed file of typed sections) and `memory` (raw guest RAM, sparse).
 * This layer knows nothing about KVM: payloads are bytes that callers
 * serialise themselves, except VM_INFO (written by commit, needed to
 * validate the memory file) and CPU_IDENTITY (needed for the CPU check).
 * docs/snapshot-format.md documents every byte.
 */
#ifndef FORKD_STATE_SNAPSHOT_FORMAT_H
#define FORKD_STATE_SNAPSHOT_FORMAT_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "util/err.h"

#define SNAP_MAGIC   "FORKDSNP"
#define SNAP_VERSION 1u
/* A diff snapshot (docs/diff-snapshots.md): PARENT and PAGE_MAP sections; full ones stay 1. */
#define SNAP_VERSION_DIFF 2u
#define SNAP_STATE_FILE	  "state"
#define SNAP_MEMORY_FILE  "memory"
#define SNAP_PAGE_SIZE	  4096u
#define SNAP_ALIGN	  8u
/* A state file holds registers and device state, never memory: anything this big is corrupt. */
#define SNAP_STATE_MAX_BYTES (256ull << 20)

/* Header field offsets (all little-endian). The checksum covers bytes [SNAP_HDR_OFF_VERSION,
 * total_len). */
#define SNAP_HDR_OFF_MAGIC	 0
#define SNAP_HDR_OFF_CHECKSUM	 8
#define SNAP_HDR_OFF_VERSION	 16
#define SNAP_HDR_OFF_FLAGS	 20
#define SNAP_HDR_OFF_HEADER_LEN	 24
#define SNAP_HDR_OFF_NR_SECTIONS 28
#define SNAP_HDR_OFF_TOTAL_LEN	 32
#define SNAP_HDR_OFF_RESERVED	 40
#define SNAP_HDR_LEN		 64

/* Section table entry, SNAP_ENT_LEN bytes each, starting right after the header. */
#define SNAP_ENT_OFF_TYPE     0
#define SNAP_ENT_OFF_INSTANCE 4
#define SNAP_ENT_OFF_OFFSET   8
#define SNAP_ENT_OFF_LENGTH   16
#define SNAP_ENT_OFF_CHECKSUM 24
#define SNAP_ENT_LEN	      32

enum snap_section_type {
	SNAP_SEC_VM_INFO = 1,	   /* written by snap_writer_commit; see struct snap_vm_info */
	SNAP_SEC_CPU_IDENTITY = 2, /* snap_cpu_identity_encode() */
	SNAP_SEC_VCPU = 3,	   /* instance = vCPU index; opaque */
	SNAP_SEC_IRQCHIP = 4,	   /* opaque */
	SNAP_SEC_PIT = 5,	   /* opaque */
	SNAP_SEC_CLOCK = 6,	   /* opaque */
	SNAP_SEC_DEVICE = 7,	   /* instance = device index; u32 device type + opaque */
	SNAP_SEC_OPAQUE = 8,	   /* anything else */
	SNAP_SEC_MEM_HASHES = 9,   /* written by snap_writer_commit: XXH3 of each memory chunk */
	SNAP_SEC_PARENT = 10,	/* version 2, written by commit: the parent's path and identity */
	SNAP_SEC_PAGE_MAP = 11, /* version 2, written by commit: which pages the file stores */
};
#define SNAP_SEC_MAX SNAP_SEC_PAGE_MAP

/* The longest diff chain: a child of a snapshot at this depth is refused (write and read). */
#define SNAP_DIFF_MAX_DEPTH 16
/* A parent's path in a PARENT section: absolute, at most this many bytes. */
#define SNAP_PARENT_PATH_MAX 4095

/* The memory file is checksummed in chunks of this many bytes (MEM_HASHES section). */
#define SNAP_HASH_CHUNK_SHIFT 20
#define SNAP_HASH_CHUNK	      (1ull << SNAP_HASH_CHUNK_SHIFT)
/* The temp directory's record of the process writing it (snapshot_tmp.c). */
#define SNAP_WRITER_FILE "writer"

/* "VCPU", "DEVICE", ...; "UNKNOWN" for values outside the enum. */
const char *snap_section_type_name(uint32_t type);

/* ---- Memory layout (VM_INFO) ---- */

#define SNAP_MEM_NAME_LEN 32

/* One guest RAM region; gpa and size are multiples of SNAP_PAGE_SIZE. */
struct snap_mem_region {
	uint64_t gpa;
	uint64_t size;
	const void *host; /* writer: where the bytes are now; NULL in the reader */
	uint64_t
	    file_offset; /* reader: where the region starts in the memory file; writer ignores */
};

/* What commit writes to the memory file: regions, packed in this order. */
struct snap_memory_source {
	const struct snap_mem_region *regions;
	uint32_t nr_regions;
};

/* The decoded VM_INFO section. */
struct snap_vm_info {
	uint64_t mem_size;	   /* sum of region sizes */
	uint64_t memory_file_size; /* == mem_size in version 1 */
	uint32_t nr_vcpus;
	uint32_t nr_regions;
	char memory_file_name[SNAP_MEM_NAME_LEN]; /* NUL-terminated */
	struct snap_mem_region *regions;
};

/* ---- Writing ---- */

struct snap_writer_section;

#define SNAP_MAX_FILES	   8
#define SNAP_FILE_NAME_LEN 32

/* A file copied into the snapshot directory at commit (e.g. a disk image). */
struct snap_writer_file {
	char name[SNAP_FILE_NAME_LEN];
	int src_fd; /* owned by the caller; read from offset 0 at commit */
};

/* What the last snap_writer_commit spent, for replies and benches. */
struct snap_commit_stats {
	uint64_t memory_us;  /* zero scan, pwrite and fsync of the memory file */
	uint64_t hash_us;    /* XXH3 of every non-zero chunk (zero chunks cost nothing) */
	uint64_t data_bytes; /* non-zero bytes written to the memory file */
	uint64_t hashed_bytes;
	int stale_removed;     /* stale temp directories of dead writers removed first */
	int threads;	       /* threads that wrote the memory file */
	uint64_t direct_bytes; /* of data_bytes, written with O_DIRECT (no page-cache copy) */
	int direct_fallback;   /* 1: O_DIRECT was refused (fcntl or a write: EINVAL) */
};

/*
 * How the memory file is written; zero (snap_writer_init) is the default:
 * O_DIRECT where the filesystem takes it, several threads.
 */
struct snap_write_opts {
	int threads;	/* 0: default (4 with O_DIRECT, else one per online CPU, at most 4) */
	bool no_direct; /* write through the page cache even where O_DIRECT works */
};

/*
 * A diff snapshot: set snap_writer.diff before commit. Commit then stores
 * only the pages whose bit is set (bit i of word i / 64: file page i), names
 * the parent (its identity is read from it at commit) and writes version 2.
 */
struct snap_diff {
	char *parent_dir; /* absolute path of the parent snapshot; malloc'ed, owned */
	uint64_t *pages;  /* malloc'ed, owned; nr_pages bits */
	uint64_t nr_pages;
};

struct snap_writer {
	struct snap_diff *diff; /* NULL: a full snapshot; freed by snap_writer_free */
	struct snap_writer_section *sections;
	size_t nr_sections;
	size_t cap_sections;
	uint32_t nr_vcpus;
	int nr_files;
	struct snap_writer_file files[SNAP_MAX_FILES];
	struct snap_commit_stats stats;
	struct snap_write_opts opts;
};

void snap_writer_init(struct snap_writer *w, uint32_t nr_vcpus);
void snap_writer_free(struct snap_writer *w);

/*
 * Copies `len` bytes as section (type, instance). Refuses VM_INFO (commit
 * writes it), unknown types, a duplicate (type, instance) and a VCPU
 * instance >= nr_vcpus.
 */
int snap_writer_add(struct snap_writer *w, uint32_t type, uint32_t instance, const void *data,
		    size_t len, struct fk_err *err);

/* A DEVICE section: payload is le32 device_type, le32 0, then `len` bytes. */
int snap_writer_add_device(struct snap_writer *w, uint32_t instance, uint32_t device_type,
			   const void *data, size_t len, struct fk_err *err);

/*
 * Adds a file that commit copies (reflink where the filesystem can, else
 * copy_file_range) from src_fd into the snapshot directory as `name`
 * ([A-Za-z0-9._-], not "state" or "memory"). src_fd must stay open until
 * commit returns.
 */
int snap_writer_add_file(struct snap_writer *w, const char *name, int src_fd, struct fk_err *err);

/* Looks up a section added so far (the in-memory twin of snap_reader_find). */
int snap_writer_find(const struct snap_writer *w, uint32_t type, uint32_t instance,
		     const void **data, size_t *len);
int snap_writer_find_device(const struct snap_writer *w, uint32_t instance, uint32_t *device_type,
			    const void **data, size_t *len);

/* Copies all of src_fd to dst_fd: FICLONE where possible, else copy_file_range. */
int snap_copy_fd(int src_fd, int dst_fd, struct fk_err *err);

/*
 * Writes the snapshot directory `dir` atomically: removes stale temp
 * directories of dead writers next to it, builds `dir.tmp-XXXXXX` (recording
 * this process as its writer), writes `memory` (only non-zero pages; zero
 * pages stay holes) with an XXH3 per SNAP_HASH_CHUNK in a MEM_HASHES section,
 * and `state`, fsyncs both and the temp dir, renames it to `dir` (refusing if
 * `dir` exists) and fsyncs the parent. On failure the temp dir is removed; a
 * crash leaves no `dir` or a complete one, plus perhaps a `dir.tmp-*` that
 * the next commit into the same directory (or the writer's parent) removes.
 */
int snap_writer_commit(struct snap_writer *w, const char *dir, const struct snap_memory_source *mem,
		       struct fk_err *err);

/* ---- Reading ---- */

struct snap_reader;

/*
 * Opens and fully validates the snapshot in `dir`: magic, version, lengths,
 * checksums, section table, VM_INFO and the memory file's size. *out is
 * freed with snap_reader_close.
 */
int snap_reader_open(const char *dir, struct snap_reader **out, struct fk_err *err);
void snap_reader_close(struct snap_reader *r);

/* 0 and the payload (valid until close), or -ENOENT. */
int snap_reader_find(const struct snap_reader *r, uint32_t type, uint32_t instance,
		     const void **data, size_t *len);
/* Like find for DEVICE sections, splitting off the device type. */
int snap_reader_find_device(const struct snap_reader *r, uint32_t instance, uint32_t *device_type,
			    const void **data, size_t *len);

/* All sections in file order, for callers that iterate (e.g. every DEVICE). */
uint32_t snap_reader_nr_sections(const struct snap_reader *r);
void snap_reader_section(const struct snap_reader *r, uint32_t index, uint32_t *type,
			 uint32_t *instance, const void **data, size_t *len);

const struct snap_vm_info *snap_reader_vm_info(const struct snap_reader *r);

/*
 * A snapshot's identity: its state file's checksum (header bytes 8..16),
 * which covers every section, the memory file's chunk checksums included.
 * A diff child records its parent's, so a parent replaced or rewritten after
 * the child was written is noticed.
 */
uint64_t snap_reader_identity(const struct snap_reader *r);
uint32_t snap_reader_version(const struct snap_reader *r);

/* The decoded PARENT section of a diff snapshot (version 2). */
struct snap_parent_info {
	char path[SNAP_PARENT_PATH_MAX + 1]; /* absolute, NUL-terminated */
	uint64_t identity;		     /* the parent's snap_reader_identity */
	uint64_t mem_size;		     /* the parent's guest RAM, = this one's */
	uint32_t depth;			     /* links to the full base: 1 if the parent is full */
};

/* 0 and the parent of a diff snapshot, or -ENOENT for a full one. */
int snap_reader_parent(const struct snap_reader *r, struct snap_parent_info *out);

/*
 * The PAGE_MAP of a diff snapshot: nr_pages bits, bit i (byte i / 8, bit
 * i % 8) set when file page i is stored in this snapshot's memory file;
 * -ENOENT for a full snapshot (every page is its own).
 */
int snap_reader_page_map(const struct snap_reader *r, const uint8_t **bits, uint64_t *nr_pages,
			 uint64_t *present);

static inline bool snap_page_map_test(const uint8_t *bits, uint64_t page)
{
	return (bits[page / 8] >> (page % 8)) & 1;
}
/* The open memory file (O_RDONLY), owned by the reader; dup() it to keep it past close. */
int snap_reader_memory_fd(const struct snap_reader *r);
const char *snap_reader_memory_path(const struct snap_reader *r);

/* ---- Integrity of the memory file (snapshot_integrity.c) ---- */

/* The MEM_HASHES section: -ENOENT when the snapshot has none (written before it existed). */
int snap_reader_mem_hashes(const struct snap_reader *r, uint64_t *chunk_size, uint64_t *nr_chunks,
			   const uint8_t **hashes_le64);

struct snap_verify_stats {
	uint64_t chunks;
	uint64_t hole_chunks; /* all-hole chunks, checked without reading */
	uint64_t bytes_read;
	uint64_t bad_chunks;
	uint64_t first_bad_offset; /* valid when bad_chunks > 0 */
	uint64_t us;
};

/*
 * Reads the memory file and checks every chunk against its recorded XXH3.
 * Fails (-EBADMSG) naming the first bad chunk's offset and how many are bad;
 * -ENOENT if the snapshot has no checksums to check against.
 */
int snap_verify_memory(const struct snap_reader *r, struct snap_verify_stats *stats,
		       struct fk_err *err);

/* XXH3 of `len` zero bytes, the checksum of a chunk that is a hole. */
uint64_t snap_zero_chunk_hash(uint64_t len);

/* ---- Prewarm: the memory file into the page cache (snapshot_prewarm.c) ---- */

struct snap_prewarm_stats {
	uint64_t file_bytes;	 /* the memory file's size */
	uint64_t data_bytes;	 /* bytes outside holes: what was read */
	uint64_t extents;	 /* data extents (SEEK_DATA .. SEEK_HOLE) */
	uint64_t us;		 /* fadvise and read-through, wall time */
	uint64_t resident_bytes; /* bytes of the file in the page cache afterwards (mincore) */
};

/*
 * Reads every data extent of the memory file (holes skipped) into the page
 * cache: posix_fadvise(WILLNEED) on all of them, then a read-through that
 * waits for them. snap_prewarm opens DIR as a snapshot first (its errors are
 * snap_reader_open's: a missing directory, not a snapshot).
 */
int snap_prewarm(const char *dir, struct snap_prewarm_stats *st, struct fk_err *err);
int snap_prewarm_fd(int fd, const char *path, struct snap_prewarm_stats *st, struct fk_err *err);

/* ---- Temp directories of writers that died (snapshot_tmp.c) ---- */

/* Writes SNAP_WRITER_FILE (pid, start time, boot id of this process) into the open dir. */
int snap_tmp_mark_writer(int dirfd, const char *dir, struct fk_err *err);

/*
 * Removes every `NAME.tmp-XXXXXX` in `parent` (only those of `base`, when not
 * NULL) whose recorded writer is no longer running (its pid gone, or reused by
 * a process started at another time, or another boot). A temp dir without a
 * writer record, or whose writer runs, is left alone. Returns how many were
 * removed (>= 0) or -errno when `parent` cannot be read.
 */
int snap_tmp_clean_stale(const char *parent, const char *base, struct fk_err *err);

/*
 * Bytes of `target`'s memory file written so far by a running writer (its
 * `TARGET.tmp-XXXXXX`, allocated blocks: holes are not counted), for a live
 * snapshot's progress. 0, or -ENOENT when no running writer's temp directory
 * is there (not started, or already renamed into place).
 */
int snap_tmp_written_bytes(const char *target, uint64_t *bytes);

/* Start time of `pid` in clock ticks since boot (/proc/PID/stat field 22); 0 if gone. */
unsigned long long snap_proc_start_time(pid_t pid);

/* ---- CPU identity ---- */

/* One CPUID entry, as struct kvm_cpuid_entry2 without the padding. */
struct snap_cpuid_entry {
	uint32_t function;
	uint32_t index;
	uint32_t flags;
	uint32_t eax, ebx, ecx, edx;
};

/*
 * The CPUID words a restore depends on. Fill both the saved and the current
 * copy from the same source (KVM_GET_SUPPORTED_CPUID) so they are comparable.
 */
struct snap_cpu_features {
	char vendor[13];    /* leaf 0 EBX EDX ECX, NUL-terminated */
	uint32_t leaf1_ecx; /* CPUID.01H:ECX */
	uint32_t leaf1_edx;
	uint32_t leaf7_ebx; /* CPUID.(07H,0) */
	uint32_t leaf7_ecx;
	uint32_t leaf7_edx;
	uint32_t xcr0_lo;	 /* CPUID.(0DH,0):EAX, supported XCR0 bits 31:0 */
	uint32_t xcr0_hi;	 /* CPUID.(0DH,0):EDX */
	uint32_t xsave_max_size; /* CPUID.(0DH,0):ECX */
	uint32_t ext1_ecx;	 /* CPUID.80000001H:ECX */
	uint32_t ext1_edx;
};

/* The CPU_IDENTITY section: the host's features and the guest's CPUID table. */
struct snap_cpu_identity {
	struct snap_cpu_features host;
	uint32_t nr_entries;
	struct snap_cpuid_entry *entries;
};

/* Extracts the feature words from a CPUID table; missing leaves read as 0. */
void snap_cpu_features_from_cpuid(const struct snap_cpuid_entry *entries, size_t n,
				  struct snap_cpu_features *out);

/* Serialises to a malloc'ed buffer for snap_writer_add(SNAP_SEC_CPU_IDENTITY). */
int snap_cpu_identity_encode(const struct snap_cpu_identity *id, uint8_t **out, size_t *len,
			     struct fk_err *err);
/* Parses a CPU_IDENTITY payload; out->entries is malloc'ed (snap_cpu_identity_free). */
int snap_cpu_identity_decode(const void *data, size_t len, struct snap_cpu_identity *out,
			     struct fk_err *err);
void snap_cpu_identity_free(struct snap_cpu_identity *id);

/*
 * Refuses (-ENOTSUP) if the vendor differs, if any saved feature bit is
 * missing in `now` (error names the first), if `now` supports fewer XCR0
 * components or a smaller XSAVE area.
 */
int snap_cpu_check_compat(const struct snap_cpu_features *saved,
			  const struct snap_cpu_features *now, struct fk_err *err);

#endif
