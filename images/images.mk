# The Linux guest: the host tool that extracts vmlinux from Debian's LZ4
# bzImage, the initramfs's PID 1, and `make images`, which downloads the
# kernel package (~26 MB) and builds the boot images into a cache
# (images/build.sh). Included by the top-level Makefile.

# Outside the checkout where we may write there, so fresh clones (CI) reuse the download.
IMAGES_DIR      ?= $(if $(shell test -w /var/cache && echo y),/var/cache/forkd/images,.cache/images)
EXTRACT_VMLINUX := $(BUILD)/tools/extract-vmlinux
FORKD_INIT      := $(BUILD)/guest/forkd-init
FORKD_INIT_SRCS := guest/init/forkd-init.c guest/init/init_parse.c

$(EXTRACT_VMLINUX): $(BUILD)/obj/tools/extract-vmlinux.o $(BUILD)/libforkd.a
	@mkdir -p $(dir $@)
	$(CC) $(OPTFLAGS) -o $@ $^ $(LIBS)

# Static: the initramfs carries no libc.
$(FORKD_INIT): $(FORKD_INIT_SRCS) guest/init/init_parse.h
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -Wall -Wextra -Werror -D_GNU_SOURCE -static -O2 -o $@ $(FORKD_INIT_SRCS)

# The point-in-time checker for Linux guests, static for the same reason.
FORKD_PATTERN := $(BUILD)/guest/forkd-pattern
$(FORKD_PATTERN): guest/pattern/forkd-pattern.c include/forkd/probe_pattern.h
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -Wall -Wextra -Werror -D_GNU_SOURCE -Iinclude -static -O2 -pthread -o $@ $<

# The guest agent, static for the same reason, with jansson linked in.
FORKD_AGENT      := $(BUILD)/guest/forkd-agent
FORKD_AGENT_SRCS := $(sort $(wildcard guest/agent/*.c)) src/agent/agent_proto.c src/util/fdio.c \
		    src/util/json_kind.c
$(FORKD_AGENT): $(FORKD_AGENT_SRCS) $(wildcard guest/agent/*.h) include/forkd/agent_proto.h
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -Wall -Wextra -Werror -D_GNU_SOURCE -Iinclude -Isrc -static -O2 \
	  -o $@.tmp $(FORKD_AGENT_SRCS) -l:libjansson.a && mv $@.tmp $@

# The top-level `all` line expands its variables before this file is included, so they
# come out empty there; the guest binaries join `all` here instead.
all: $(EXTRACT_VMLINUX) $(FORKD_INIT) $(FORKD_PATTERN) $(FORKD_AGENT)

# The agent's request parsing is unit-tested on the host; the host tests run the agent binary.
$(BUILD)/tests/test_agent_request: $(BUILD)/obj/guest/agent/request.o $(BUILD)/obj/src/util/json_kind.o
$(BUILD)/asan/tests/test_agent_request: $(BUILD)/asan/obj/guest/agent/request.o \
  $(BUILD)/asan/obj/src/util/json_kind.o
$(BUILD)/tests/test_agent_host $(BUILD)/asan/tests/test_agent_host \
  $(BUILD)/tests/test_agent_client $(BUILD)/asan/tests/test_agent_client: | $(FORKD_AGENT)

# forkd-init's parsing is unit-tested on the host.
$(BUILD)/tests/test_init_parse: $(BUILD)/obj/guest/init/init_parse.o
$(BUILD)/asan/tests/test_init_parse: $(BUILD)/asan/obj/guest/init/init_parse.o

images: $(EXTRACT_VMLINUX) $(FORKD_INIT) $(FORKD_PATTERN) $(FORKD_AGENT)
	FORKD_BUILD=$(abspath $(BUILD)) FORKD_IMAGES_DIR=$(abspath $(IMAGES_DIR)) ./images/build.sh
