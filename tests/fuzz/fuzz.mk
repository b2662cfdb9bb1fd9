# SPDX-License-Identifier: MIT
# `make fuzz` (Makefile.am) runs this GNU makefile: it builds the fuzz
# targets with clang, libFuzzer, ASan and UBSan into $(builddir)/fuzz,
# apart from the normal build (which stays gcc, libtool, shared). The
# library's and the simulator's sources are compiled straight into each
# fuzz binary with the same flags as the target (sanitizer coverage
# everywhere, static, no libtool), so libFuzzer sees the coverage of the
# library's parser and state machine, not just of the harness. The source
# lists come from Makefile.am (LIB_SOURCES, SIM_SOURCES), so a new lib/
# file is picked up without touching this file.
#
# Variables (Makefile.am passes them): srcdir, builddir (absolute),
# LIB_SOURCES, SIM_SOURCES, FUZZ_CC (default clang), FUZZ_SECONDS.
srcdir ?= .
builddir ?= .
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
O := $(builddir)/fuzz

FZ_CPPFLAGS := -include $(builddir)/config.h -I$(srcdir)/include -I$(builddir)/include \
	-I$(srcdir)/lib -DVFIOMIG_LIBFUZZER
FZ_CFLAGS := -g -O1 -fno-omit-frame-pointer -fno-strict-aliasing -fvisibility=hidden \
	-fsanitize=address,undefined -fno-sanitize-recover=all
# Coverage guidance comes from the library and the simulator; the harness
# (its reference reader, CRCs, device model, mutator) is left out, so its
# loops neither slow every input down nor count as progress.
FZ_COV := -fsanitize=fuzzer-no-link
$(O)/obj/tests/fuzz/%.o: FZ_COV :=
FZ_LDFLAGS := -fsanitize=fuzzer,address,undefined

LIB_O := $(patsubst %.c,$(O)/obj/%.o,$(filter %.c,$(LIB_SOURCES) $(SIM_SOURCES)))
COMMON_O := $(patsubst %,$(O)/obj/tests/fuzz/%.o,model mutate driver)
TARGETS := $(O)/fuzz_stream $(O)/fuzz_return $(O)/fuzz_caps

.PHONY: build run
build: $(TARGETS)

run: build
	$(SHELL) $(srcdir)/tests/fuzz/run.sh $(O) $(srcdir) $(FUZZ_SECONDS)

$(O)/obj/%.o: $(srcdir)/%.c
	@mkdir -p $(dir $@)
	@echo "  FUZZCC   $*.o"
	@$(FUZZ_CC) $(FZ_CPPFLAGS) $(FZ_CFLAGS) $(FZ_COV) -MMD -MP -c -o $@ $<

$(O)/fuzz_stream: $(O)/obj/tests/fuzz/fuzz_stream.o $(COMMON_O) $(LIB_O)
	@echo "  FUZZLD   $@"
	@$(FUZZ_CC) $(FZ_LDFLAGS) -o $@ $^

$(O)/fuzz_return: $(O)/obj/tests/fuzz/fuzz_return.o $(COMMON_O) $(LIB_O)
	@echo "  FUZZLD   $@"
	@$(FUZZ_CC) $(FZ_LDFLAGS) -o $@ $^

# The capability parser's entry point (tests/fuzz_caps.c) needs no driver.
$(O)/fuzz_caps: $(O)/obj/tests/fuzz_caps.o $(LIB_O)
	@echo "  FUZZLD   $@"
	@$(FUZZ_CC) $(FZ_LDFLAGS) -o $@ $^

-include $(LIB_O:.o=.d) $(COMMON_O:.o=.d) $(O)/obj/tests/fuzz/fuzz_stream.d \
	$(O)/obj/tests/fuzz/fuzz_return.d $(O)/obj/tests/fuzz_caps.d
