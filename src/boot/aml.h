/* SPDX-License-Identifier: MIT */
/*
 * A small AML (ACPI Machine Language) encoder: just what the DSDT needs.
 * Objects are appended to a growable byte buffer. Constructs whose size is
 * only known at the end (Scope, Device, Method, Package) are opened with
 * aml_*_open(), which hands back a mark, and finished with aml_close(mark),
 * which inserts the PkgLength once the body is known.
 *
 * Errors are sticky: the first failure (-ENOMEM, -E2BIG, -EINVAL) is kept in
 * buf->error, every later call returns it without writing, so a builder can
 * emit a whole table and check once. Names are ASL-style strings: "_SB",
 * "\\_SB.COM1", "^PARN"; segments shorter than 4 characters are padded
 * with '_'. The integer encoders assume a revision-2 DSDT (64-bit integers).
 */
#ifndef FORKD_BOOT_AML_H
#define FORKD_BOOT_AML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest value a PkgLength can hold (28 bits). */
#define AML_PKGLEN_MAX 0x0FFFFFFFu

struct aml_buf {
	uint8_t *data;
	size_t len;
	size_t cap;
	size_t limit; /* growth past this many bytes fails with -E2BIG */
	int error;    /* first error, 0 while all is well */
};

/* limit 0 means AML_PKGLEN_MAX. */
void aml_buf_init(struct aml_buf *b, size_t limit);
void aml_buf_free(struct aml_buf *b);
int aml_bytes(struct aml_buf *b, const void *bytes, size_t len);
int aml_byte(struct aml_buf *b, uint8_t byte);

/*
 * Encodes a PkgLength whose value (which counts the PkgLength bytes
 * themselves) is len. Returns the number of bytes written to out (1-4) or
 * -E2BIG past AML_PKGLEN_MAX.
 */
int aml_pkglen_encode(uint32_t len, uint8_t out[4]);

int aml_namestring(struct aml_buf *b, const char *path);
/* ZeroOp, OneOp, OnesOp or the shortest Byte/Word/DWord/QWord constant. */
int aml_int(struct aml_buf *b, uint64_t value);
/* String constant; printable 7-bit ASCII only. */
int aml_string(struct aml_buf *b, const char *s);
/* Buffer(len) { bytes } */
int aml_buffer(struct aml_buf *b, const void *bytes, size_t len);
/* Compresses a 7-character EISA id ("PNP0501") into its 32-bit form. */
int aml_eisaid_encode(const char *id, uint32_t *out);
/* EisaId() always as a DWord constant, the form disassemblers recognise. */
int aml_eisaid(struct aml_buf *b, const char *id);

/* Name(name, ...): the caller appends the data object. */
int aml_name(struct aml_buf *b, const char *name);
int aml_name_int(struct aml_buf *b, const char *name, uint64_t value);
int aml_name_str(struct aml_buf *b, const char *name, const char *s);
int aml_name_eisaid(struct aml_buf *b, const char *name, const char *id);

int aml_scope_open(struct aml_buf *b, const char *name, size_t *mark);
int aml_device_open(struct aml_buf *b, const char *name, size_t *mark);
/* Method(name, nargs, Serialized/NotSerialized), sync level 0. */
int aml_method_open(struct aml_buf *b, const char *name, int nargs, bool serialized, size_t *mark);
/* Package(count) { ... }: the caller appends exactly count elements. */
int aml_package_open(struct aml_buf *b, int count, size_t *mark);
int aml_close(struct aml_buf *b, size_t mark);
/* Return(...): the caller appends the value. */
int aml_return(struct aml_buf *b);
/* If (predicate) { ... }: the caller appends the predicate, the body, then aml_close(mark). */
int aml_if_open(struct aml_buf *b, size_t *mark);
/* LEqual(a, b): the caller appends both operands. */
int aml_lequal(struct aml_buf *b);
/* Arg0..Arg6, a method's arguments. */
int aml_arg(struct aml_buf *b, int index);
/* Notify(path, value), e.g. 0x80 for "device check / status changed". */
int aml_notify(struct aml_buf *b, const char *path, uint64_t value);

/*
 * Resource templates: descriptors are appended to a separate aml_buf, which
 * aml_rt_end() terminates with an EndTag and checksum; the result goes into
 * the table with aml_buffer().
 */
int aml_rt_io(struct aml_buf *rt, uint16_t min, uint16_t max, uint8_t align, uint8_t len);
/* IRQNoFlags() { irq }: ISA IRQ 0-15, edge, active high, exclusive. */
int aml_rt_irq_noflags(struct aml_buf *rt, unsigned int irq);
int aml_rt_memory32_fixed(struct aml_buf *rt, bool writable, uint32_t base, uint32_t size);

/* Flags of the extended Interrupt() descriptor; 0 = producer, level, high, exclusive. */
#define AML_IRQ_CONSUMER   0x01
#define AML_IRQ_EDGE	   0x02
#define AML_IRQ_ACTIVE_LOW 0x04
#define AML_IRQ_SHARED	   0x08
#define AML_IRQ_WAKE	   0x10
int aml_rt_interrupt(struct aml_buf *rt, unsigned int flags, uint32_t gsi);
/* EndTag with a checksum making the whole template sum to zero. */
int aml_rt_end(struct aml_buf *rt);
/* Ends rt with aml_rt_end() and appends it to b as a Buffer; an error in rt becomes b's. */
int aml_resource_template(struct aml_buf *b, struct aml_buf *rt);

#endif
