# forkd build. `make` builds everything into build/; `make test` runs the
# unit tests (plain and ASan+UBSan builds) and the integration tests that
# drive real KVM guests.

BUILD    ?= build
CC       ?= gcc
CFLAGS_BASE := -std=gnu11 -Wall -Wextra -Werror -g -D_GNU_SOURCE -Isrc -Iinclude -MMD -MP
OPTFLAGS ?= -O2
SANFLAGS := -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
LIBS     := -lpthread -ljansson -lxxhash -llz4 -lsqlite3 -lmicrohttpd -lseccomp
TESTLIBS := -lcmocka
CLI_LIBS := $(LIBS) -lcurl

LIB_SRCS   := $(sort $(filter-out src/core/main.c src/uffd/forkd_uffd.c src/cli/%.c,$(wildcard src/*/*.c)))
# Until src/daemon/daemon.c exists, `forkd serve` links against stubs that fail with ENOSYS.
ifeq ($(wildcard src/daemon/daemon.c),)
LIB_SRCS   += src/daemon/stub/daemon_missing.c
endif
UNIT_SRCS  := $(sort $(wildcard tests/unit/test_*.c))
ITEST_SRCS := $(sort $(wildcard tests/integration/test_*.c))
ITEST_HELPERS := $(filter-out $(ITEST_SRCS),$(wildcard tests/integration/*.c))

LIB_OBJS      := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
LIB_ASAN_OBJS := $(LIB_SRCS:%.c=$(BUILD)/asan/obj/%.o)
UNIT_BINS      := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
UNIT_ASAN_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/asan/tests/%)
ITEST_BINS     := $(ITEST_SRCS:tests/integration/test_%.c=$(BUILD)/tests/itest_%)
ITEST_HELPER_OBJS := $(ITEST_HELPERS:%.c=$(BUILD)/obj/%.o)

VMM      := $(BUILD)/forkd-vmm
VMM_ASAN := $(BUILD)/asan/forkd-vmm
FORKD    := $(BUILD)/forkd
FORKD_ASAN := $(BUILD)/asan/forkd
UFFD     := $(BUILD)/forkd-uffd

.PHONY: all bench-tools test unit-test integration-test demo format check-format clean images \
	test-rootfs
SANDBOX_BENCH := $(BUILD)/bench/sandbox-bench
SECCOMP_BENCH := $(BUILD)/bench/seccomp-syscall
BENCH_TOOLS := $(BUILD)/bench/readytime $(SANDBOX_BENCH) $(SECCOMP_BENCH)

all: $(VMM) $(VMM_ASAN) $(FORKD) $(FORKD_ASAN) $(UFFD) $(UNIT_BINS) $(UNIT_ASAN_BINS) $(ITEST_BINS) probe $(BENCH_TOOLS) \
	$(EXTRACT_VMLINUX) $(FORKD_INIT) $(FORKD_PATTERN) $(FORKD_AGENT)

include guest/probe/probe.mk
include images/images.mk

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(OPTFLAGS) -c $< -o $@

$(BUILD)/asan/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(SANFLAGS) -c $< -o $@

$(BUILD)/libforkd.a: $(LIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/asan/libforkd.a: $(LIB_ASAN_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(VMM): $(BUILD)/obj/src/core/main.o $(BUILD)/libforkd.a
	$(CC) $(OPTFLAGS) -o $@ $^ $(LIBS)

$(VMM_ASAN): $(BUILD)/asan/obj/src/core/main.o $(BUILD)/asan/libforkd.a
	$(CC) $(SANFLAGS) -o $@ $^ $(LIBS)

# The userfaultfd page-fault handler of lazy restores (docs/design/userfaultfd.md).
$(UFFD): $(BUILD)/obj/src/uffd/forkd_uffd.o $(BUILD)/libforkd.a
	$(CC) $(OPTFLAGS) -o $@ $^ $(LIBS)

CLI_OBJS := $(sort $(wildcard src/cli/*.c))
CLI_OBJS := $(CLI_OBJS:%.c=$(BUILD)/obj/%.o)
$(FORKD): $(CLI_OBJS) $(BUILD)/libforkd.a
	$(CC) $(OPTFLAGS) -o $@ $^ $(CLI_LIBS)

# The CLI built with ASan+UBSan: the sanitized unit tests run this one.
$(FORKD_ASAN): $(CLI_OBJS:$(BUILD)/obj/%=$(BUILD)/asan/obj/%) $(BUILD)/asan/libforkd.a
	$(CC) $(SANFLAGS) -o $@ $^ $(CLI_LIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(BUILD)/libforkd.a
	@mkdir -p $(dir $@)
	$(CC) $(OPTFLAGS) -o $@ $^ $(LIBS) $(TESTLIBS)

$(BUILD)/asan/tests/%: $(BUILD)/asan/obj/tests/unit/%.o $(BUILD)/asan/libforkd.a
	@mkdir -p $(dir $@)
	$(CC) $(SANFLAGS) -o $@ $^ $(LIBS) $(TESTLIBS)

$(BUILD)/tests/itest_%: $(BUILD)/obj/tests/integration/test_%.o $(ITEST_HELPER_OBJS) $(BUILD)/libforkd.a
	@mkdir -p $(dir $@)
	$(CC) $(OPTFLAGS) -o $@ $^ $(LIBS) $(TESTLIBS)

$(SECCOMP_BENCH): $(BUILD)/obj/bench/seccomp_syscall.o $(BUILD)/libforkd.a
	@mkdir -p $(dir $@)
	$(CC) $(OPTFLAGS) -o $@ $^ $(LIBS)

$(SANDBOX_BENCH): $(BUILD)/obj/bench/sandbox.o $(BUILD)/libforkd.a
	@mkdir -p $(dir $@)
	$(CC) $(OPTFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/bench/%: bench/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(OPTFLAGS) -o $@ $<

# Some unit tests run the guest agent and the CLI on this host (no VM needed).
# The sanitized tests run the sanitized CLI.
unit-test: $(UNIT_BINS) $(UNIT_ASAN_BINS) $(FORKD) $(FORKD_ASAN) $(FORKD_AGENT) $(VMM) $(VMM_ASAN)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; \
	  FORKD_AGENT=$(abspath $(FORKD_AGENT)) FORKD_CLI=$(abspath $(FORKD)) $$t; done; \
	for t in $(UNIT_ASAN_BINS); do echo "== $$t"; \
	  FORKD_AGENT=$(abspath $(FORKD_AGENT)) FORKD_CLI=$(abspath $(FORKD_ASAN)) $$t; done
	@echo "== sdk/python (unittest, against a fake daemon)"
	@python3 -m unittest discover -s sdk/python/tests
	@$(MAKE) --no-print-directory sdk-pip-install
	@echo "== sdk/typescript (tsc strict, node --test against the simulated daemon)"
	@$(MAKE) --no-print-directory ts-sdk
	@node --test $(BUILD)/sdk/typescript/test/*.test.js

# `pip install ./sdk/python` as a user would, offline: into a fresh venv of Debian's python3,
# with Debian's setuptools and wheel as the build backend (no index), from a copy so the
# checkout gets no build/ or egg-info; then the SDK's tests run against the installed package.
SDK_VENV := $(BUILD)/sdk/python-venv
.PHONY: sdk-pip-install
sdk-pip-install:
	@echo "== sdk/python (pip install from the checkout into a fresh venv, offline)"
	@rm -rf $(SDK_VENV) $(BUILD)/sdk/python-src && mkdir -p $(BUILD)/sdk && \
	  cp -r sdk/python $(BUILD)/sdk/python-src && \
	  /usr/bin/python3 -m venv --system-site-packages $(SDK_VENV) && \
	  $(SDK_VENV)/bin/pip install -q --no-build-isolation --no-index $(BUILD)/sdk/python-src && \
	  cd $(BUILD)/sdk && $(abspath $(SDK_VENV))/bin/python -c 'import forkd; \
	    assert "python-venv" in forkd.__file__, forkd.__file__; \
	    print("installed forkd", forkd.__version__, "at", forkd.__file__)' && \
	  FORKD_SDK_TEST_INSTALLED=1 $(abspath $(SDK_VENV))/bin/python -m unittest discover -q \
	    -s $(abspath sdk/python/tests)

# The TypeScript SDK and its tests, compiled into $(BUILD)/sdk/typescript (its
# e2e, test/e2e_daemon.js, runs against a real daemon: sdk/typescript/README.md).
.PHONY: ts-sdk
ts-sdk:
	@command -v tsc >/dev/null || { echo "tsc not found: scripts/install-deps.sh installs node-typescript" >&2; exit 1; }
	@tsc -p sdk/typescript --outDir $(BUILD)/sdk/typescript

# Each binary runs natively where this machine's KVM can run it, else in the
# nested test host (tests/run-integration.sh, docs/testing.md); that and the
# Linux tests need the Debian kernel images (make images: ~26 MB once).
# itest_image boots a root filesystem image; the nested test host sees / read-only, so it is
# built (or found up to date) here first (docs/images.md; ~90 s and ~40 MB of packages once).
TEST_ROOTFS := forkd-test-base
test-rootfs: $(FORKD) $(FORKD_AGENT)
	$(FORKD) image build $(TEST_ROOTFS) --packages python3

integration-test: $(VMM) $(VMM_ASAN) $(UFFD) $(ITEST_BINS) probe images test-rootfs ts-sdk
	@FORKD_VMM=$(abspath $(VMM)) FORKD_VMM_ASAN=$(abspath $(VMM_ASAN)) \
	  FORKD_PROBE=$(abspath $(PROBE_ELF)) FORKD_BUILD=$(abspath $(BUILD)) \
	  FORKD_IMAGES=$(abspath $(IMAGES_DIR)) tests/run-integration.sh $(ITEST_BINS)

test: all
	@$(MAKE) --no-print-directory unit-test
	@$(MAKE) --no-print-directory integration-test

bench-tools: $(BENCH_TOOLS)

demo: $(VMM) probe
	./scripts/demo.sh

FORMAT_FILES = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
format:
	clang-format -i $(FORMAT_FILES)
check-format:
	clang-format --dry-run -Werror $(FORMAT_FILES)

clean:
	rm -rf $(BUILD)

.SECONDARY:

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
