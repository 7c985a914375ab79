/* SPDX-License-Identifier: MIT */
/*
 * The uncompressed kernel inside an x86 bzImage, for the PVH entry: Debian's
 * cloud kernel is built with CONFIG_KERNEL_LZ4, so its payload is an LZ4
 * *legacy* stream (`lz4 -l`) followed by the 4-byte little-endian size of the
 * output (the kernel's size_append). The output is the stripped vmlinux ELF,
 * which carries the XEN_ELFNOTE_PHYS32_ENTRY note.
 */
#ifndef FORKD_BOOT_BZIMAGE_PAYLOAD_H
#define FORKD_BOOT_BZIMAGE_PAYLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* Setup header fields we rely on (Documentation/arch/x86/boot.rst). */
#define FK_BZ_SETUP_SECTS_OFF	 0x1f1
#define FK_BZ_HDRS_OFF		 0x202
#define FK_BZ_VERSION_OFF	 0x206
#define FK_BZ_PAYLOAD_OFFSET_OFF 0x248
#define FK_BZ_PAYLOAD_LENGTH_OFF 0x24c
#define FK_BZ_HEADER_END	 0x250
#define FK_BZ_MIN_VERSION	 0x0208 /* first with payload_offset/payload_length */

#define FK_LZ4_LEGACY_MAGIC 0x184C2102u
/* lz4 -l cuts its input into blocks of this size; only the last may be shorter. */
#define FK_LZ4_LEGACY_BLOCK_SIZE (8u << 20)

#define FK_VMLINUX_DEFAULT_MAX (256u << 20)

struct fk_bzimage_payload {
	uint16_t protocol_version;
	unsigned setup_sects; /* after the "0 means 4" rule */
	uint64_t offset;      /* of the compressed payload in the file */
	uint64_t length;
};

/* Validates the setup header of the bzImage `image` (named `name` in
 * messages) and finds its compressed payload inside the file. */
int fk_bzimage_find_payload(const char *name, const uint8_t *image, size_t image_len,
			    struct fk_bzimage_payload *payload, struct fk_err *err);

/* Name of the compression format `data` starts with ("gzip", "xz", "zstd",
 * "lzma", "bzip2", "lzo", "LZ4 legacy", "LZ4 frame", "uncompressed ELF"), or
 * NULL if unknown. */
const char *fk_compression_name(const uint8_t *data, size_t len);

/*
 * Decompresses an LZ4 legacy stream into a malloc'ed buffer of at most
 * max_out bytes (*out, *out_len; the caller frees). A trailing 4-byte size
 * field, as the kernel appends, is checked against the output size.
 */
int fk_lz4_legacy_decompress(const char *name, const uint8_t *in, size_t in_len, size_t max_out,
			     uint8_t **out, size_t *out_len, struct fk_err *err);

/* Whole pipeline: header, payload, LZ4 legacy decompression, ELF magic. */
int fk_bzimage_extract_vmlinux(const char *name, const uint8_t *image, size_t image_len,
			       size_t max_out, uint8_t **out, size_t *out_len, struct fk_err *err);

#endif
