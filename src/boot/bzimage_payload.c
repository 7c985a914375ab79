/* SPDX-License-Identifier: MIT */
#include "boot/bzimage_payload.h"

#include <errno.h>
#include <lz4.h>
#include <stdlib.h>
#include <string.h>

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

int fk_bzimage_find_payload(const char *name, const uint8_t *image, size_t image_len,
			    struct fk_bzimage_payload *payload, struct fk_err *err)
{
	if (image_len < FK_BZ_HEADER_END)
		return fk_fail(err, EINVAL,
			       "%s: too short for a bzImage: %zu bytes, the setup header ends at "
			       "0x%x",
			       name, image_len, FK_BZ_HEADER_END);
	if (memcmp(image + FK_BZ_HDRS_OFF, "HdrS", 4) != 0)
		return fk_fail(err, EINVAL,
			       "%s: not a bzImage: bad setup header magic at 0x%x (expected "
			       "\"HdrS\", found %02x %02x %02x %02x)",
			       name, FK_BZ_HDRS_OFF, image[FK_BZ_HDRS_OFF],
			       image[FK_BZ_HDRS_OFF + 1], image[FK_BZ_HDRS_OFF + 2],
			       image[FK_BZ_HDRS_OFF + 3]);

	uint16_t version = le16(image + FK_BZ_VERSION_OFF);
	if (version < FK_BZ_MIN_VERSION)
		return fk_fail(err, ENOTSUP,
			       "%s: unsupported boot protocol version %u.%02u: need 2.08 or later "
			       "for payload_offset/payload_length",
			       name, version >> 8, version & 0xff);

	unsigned setup_sects = image[FK_BZ_SETUP_SECTS_OFF];
	if (setup_sects == 0)
		setup_sects = 4; /* boot protocol: 0 means the historical 4 */
	uint64_t offset =
	    (uint64_t)(setup_sects + 1) * 512 + le32(image + FK_BZ_PAYLOAD_OFFSET_OFF);
	uint64_t length = le32(image + FK_BZ_PAYLOAD_LENGTH_OFF);

	if (length == 0)
		return fk_fail(err, EINVAL, "%s: bzImage payload_length is 0", name);
	if (offset > image_len || length > image_len - offset)
		return fk_fail(err, EINVAL,
			       "%s: payload out of bounds: offset %llu + length %llu exceeds the "
			       "file size %zu",
			       name, (unsigned long long)offset, (unsigned long long)length,
			       image_len);

	payload->protocol_version = version;
	payload->setup_sects = setup_sects;
	payload->offset = offset;
	payload->length = length;
	return 0;
}

const char *fk_compression_name(const uint8_t *data, size_t len)
{
	static const struct {
		const char *name;
		size_t len;
		uint8_t magic[6];
	} formats[] = {
	    {"gzip", 2, {0x1f, 0x8b}},
	    {"xz", 6, {0xfd, '7', 'z', 'X', 'Z', 0x00}},
	    {"zstd", 4, {0x28, 0xb5, 0x2f, 0xfd}},
	    {"bzip2", 3, {'B', 'Z', 'h'}},
	    {"lzo", 4, {0x89, 'L', 'Z', 'O'}},
	    /* The kernel's lzma is the legacy .lzma header: properties 0x5d, then
	     * a little-endian dictionary size whose low bytes are 0. */
	    {"lzma", 3, {0x5d, 0x00, 0x00}},
	    {"LZ4 legacy", 4, {0x02, 0x21, 0x4c, 0x18}},
	    {"LZ4 frame", 4, {0x04, 0x22, 0x4d, 0x18}},
	    {"uncompressed ELF", 4, {0x7f, 'E', 'L', 'F'}},
	};

	for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++)
		if (len >= formats[i].len && memcmp(data, formats[i].magic, formats[i].len) == 0)
			return formats[i].name;
	return NULL;
}

/* Makes room for one more block; allocation is bounded by max_out plus one block. */
static int reserve_block(const char *name, uint8_t **buf, size_t *cap, size_t used, size_t max_out,
			 struct fk_err *err)
{
	size_t need = used + FK_LZ4_LEGACY_BLOCK_SIZE;

	if (need <= *cap)
		return 0;
	size_t new_cap = *cap * 2 > need ? *cap * 2 : need;
	size_t limit = max_out + FK_LZ4_LEGACY_BLOCK_SIZE;
	if (new_cap > limit)
		new_cap = limit;
	uint8_t *p = realloc(*buf, new_cap);
	if (!p)
		return fk_fail_errno(err, ENOMEM, "%s: allocating %zu bytes for the output", name,
				     new_cap);
	*buf = p;
	*cap = new_cap;
	return 0;
}

int fk_lz4_legacy_decompress(const char *name, const uint8_t *in, size_t in_len, size_t max_out,
			     uint8_t **out, size_t *out_len, struct fk_err *err)
{
	const uint32_t block_bound = (uint32_t)LZ4_COMPRESSBOUND(FK_LZ4_LEGACY_BLOCK_SIZE);
	uint8_t *buf = NULL;
	size_t cap = 0, used = 0, pos = 4;
	unsigned blocks = 0;
	int ret;

	if (in_len < 4 || le32(in) != FK_LZ4_LEGACY_MAGIC) {
		const char *found = fk_compression_name(in, in_len);
		return fk_fail(err, ENOTSUP,
			       "%s: payload is not an LZ4 legacy stream (magic 0x%08x expected); "
			       "detected: %s",
			       name, FK_LZ4_LEGACY_MAGIC, found ? found : "unknown format");
	}

	while (pos < in_len) {
		size_t left = in_len - pos;
		if (left < 4) {
			ret = fk_fail(err, EINVAL,
				      "%s: LZ4 stream truncated: %zu stray bytes at payload offset "
				      "%zu, expected a 4-byte block size",
				      name, left, pos);
			goto fail;
		}
		uint32_t size = le32(in + pos);
		if (size == FK_LZ4_LEGACY_MAGIC) { /* concatenated streams are allowed */
			pos += 4;
			continue;
		}
		if (left == 4) {
			/* Not a block (it would have no data): the kernel's size trailer. */
			if (size != used) {
				ret =
				    fk_fail(err, EINVAL,
					    "%s: LZ4 stream: the trailing size field says %u "
					    "bytes but the blocks decompress to %zu (truncated or "
					    "corrupt payload)",
					    name, size, used);
				goto fail;
			}
			pos += 4;
			break;
		}
		if (size == 0 || size > block_bound) {
			ret = fk_fail(err, EINVAL,
				      "%s: LZ4 block %u at payload offset %zu: compressed size %u "
				      "is outside 1..%u (corrupt stream)",
				      name, blocks, pos, size, block_bound);
			goto fail;
		}
		if (size > left - 4) {
			ret = fk_fail(err, EINVAL,
				      "%s: LZ4 block %u at payload offset %zu truncated: needs %u "
				      "bytes, %zu left",
				      name, blocks, pos, size, left - 4);
			goto fail;
		}
		ret = reserve_block(name, &buf, &cap, used, max_out, err);
		if (ret < 0)
			goto fail;
		int n = LZ4_decompress_safe((const char *)in + pos + 4, (char *)buf + used,
					    (int)size, FK_LZ4_LEGACY_BLOCK_SIZE);
		if (n < 0) {
			ret = fk_fail(err, EINVAL,
				      "%s: LZ4 block %u at payload offset %zu: corrupt compressed "
				      "data",
				      name, blocks, pos);
			goto fail;
		}
		used += (size_t)n;
		if (used > max_out) {
			ret = fk_fail(err, EFBIG,
				      "%s: decompressed kernel exceeds the limit of %zu bytes",
				      name, max_out);
			goto fail;
		}
		pos += 4 + (size_t)size;
		blocks++;
	}
	if (blocks == 0) {
		ret = fk_fail(err, EINVAL, "%s: LZ4 stream has no blocks", name);
		goto fail;
	}
	*out = buf;
	*out_len = used;
	return 0;
fail:
	free(buf);
	return ret;
}

int fk_bzimage_extract_vmlinux(const char *name, const uint8_t *image, size_t image_len,
			       size_t max_out, uint8_t **out, size_t *out_len, struct fk_err *err)
{
	struct fk_bzimage_payload payload;
	uint8_t *elf = NULL;
	size_t elf_len = 0;
	int ret;

	ret = fk_bzimage_find_payload(name, image, image_len, &payload, err);
	if (ret < 0)
		return ret;
	ret = fk_lz4_legacy_decompress(name, image + payload.offset, payload.length, max_out, &elf,
				       &elf_len, err);
	if (ret < 0)
		return ret;
	if (elf_len < 4 || memcmp(elf,
				  "\x7f"
				  "ELF",
				  4) != 0) {
		free(elf);
		return fk_fail(err, ENOEXEC,
			       "%s: the decompressed payload (%zu bytes) is not an ELF file", name,
			       elf_len);
	}
	*out = elf;
	*out_len = elf_len;
	return 0;
}
