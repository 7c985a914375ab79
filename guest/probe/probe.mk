# The probe guest (guest/probe/): a freestanding PVH ELF built by the host gcc.
# Included by the top-level Makefile, which defines BUILD and CC.

PROBE_ELF := $(BUILD)/guest/probe.elf
PROBE_DIR := guest/probe
PROBE_C_SRCS := $(sort $(wildcard $(PROBE_DIR)/*.c))
PROBE_S_SRCS := $(sort $(wildcard $(PROBE_DIR)/*.S))
PROBE_OBJS := $(PROBE_S_SRCS:$(PROBE_DIR)/%.S=$(BUILD)/guest/probe/%.o) \
	      $(PROBE_C_SRCS:$(PROBE_DIR)/%.c=$(BUILD)/guest/probe/%.o)

# Freestanding, no SSE (CR4.OSFXSR stays off), no red zone, small code model
# (the image lives at 1 MiB). Null pointers are real addresses here (RAM at
# 0) and gcc must not turn our mem* loops back into mem* calls.
PROBE_CFLAGS := -std=gnu11 -Wall -Wextra -Werror -O2 -ffreestanding -nostdlib \
	-fno-pic -fno-pie -mno-red-zone -mgeneral-regs-only -mcmodel=small \
	-fno-stack-protector -fno-asynchronous-unwind-tables -fno-unwind-tables \
	-fno-delete-null-pointer-checks -fno-tree-loop-distribute-patterns \
	-fno-omit-frame-pointer -Iinclude -I$(PROBE_DIR) -MMD -MP
PROBE_LDFLAGS := -nostdlib -static -no-pie -Wl,-T,$(PROBE_DIR)/probe.ld \
	-Wl,--build-id=none -Wl,-z,noexecstack -Wl,-z,max-page-size=0x1000 \
	-Wl,--no-warn-rwx-segments

.PHONY: probe
probe: $(PROBE_ELF)

$(PROBE_ELF): $(PROBE_OBJS) $(PROBE_DIR)/probe.ld
	@mkdir -p $(dir $@)
	$(CC) $(PROBE_LDFLAGS) -o $@ $(PROBE_OBJS)

$(BUILD)/guest/probe/%.o: $(PROBE_DIR)/%.c
	@mkdir -p $(dir $@)
	$(CC) $(PROBE_CFLAGS) -c $< -o $@

$(BUILD)/guest/probe/%.o: $(PROBE_DIR)/%.S
	@mkdir -p $(dir $@)
	$(CC) $(PROBE_CFLAGS) -c $< -o $@
