# tests/fuzz/fuzz.mk -- the libFuzzer targets of tests/fuzz/ (included by the top Makefile;
# `make -f tests/fuzz/fuzz.mk TARGET` works too, reading the Makefile first).
#
#   make fuzz-replay     builds each target with the replay driver (tests/fuzz/replay.c) in
#                        $(BUILD)/tests/fuzz/ with the project's compiler and flags (so -Werror
#                        and, in the sanitizer build, the sanitizers apply) and runs it over its
#                        seed corpus and its regression cases: part of make check, seconds
#   make fuzz            installs clang and its libFuzzer runtime if missing (as root), builds
#                        every target with clang -fsanitize=fuzzer,address,undefined in
#                        $(FUZZ_BUILD) and runs each for FUZZ_SECONDS (default 60), one after
#                        the other; prints executions, coverage and corpus size per target and
#                        fails when one found a crash or a broken invariant (the input is in
#                        $(FUZZ_BUILD)/artifacts/<target>/)
#   make fuzz-corpus     regenerates the seed corpus and dictionaries (tests/fuzz/make_corpus.py,
#                        make_monitor_corpus.py)
#
# FUZZ_TARGETS=loss make fuzz runs one target; FUZZ_ARGS adds libFuzzer flags (-jobs, -seed).
# The seeds (tests/fuzz/corpus/<target>/) are only read: what a run finds goes to the working
# corpus $(FUZZ_BUILD)/corpus/<target>/, which later runs start from. A crash found becomes a
# file of tests/fuzz/regressions/<target>/, replayed by make check from then on.

ifndef FUZZ_MK_READ
FUZZ_MK_READ := 1
# Read on its own (make -f tests/fuzz/fuzz.mk): the Makefile's variables and rules first.
# (Included by the Makefile, after its variables, CFLAGS_ALL is already defined.)
ifeq ($(origin CFLAGS_ALL),undefined)
include Makefile
endif

FUZZ_MK := tests/fuzz/fuzz.mk
FUZZ_TARGETS ?= loss batch v2 b64 npy http monitor auth state jsonnum
FUZZ_SECONDS ?= 60
FUZZ_BUILD ?= build/fuzz
FUZZ_CC ?= clang
FUZZ_ARGS ?=
# Inputs longer than these are not tried (the seeds are at most 16 KiB).
FUZZ_MAX_LEN_loss = 16384
FUZZ_MAX_LEN_batch = 16384
FUZZ_MAX_LEN_v2 = 16384
FUZZ_MAX_LEN_b64 = 1024
FUZZ_MAX_LEN_npy = 4096
FUZZ_MAX_LEN_http = 8192
FUZZ_MAX_LEN_monitor = 4096
FUZZ_MAX_LEN_auth = 4096
FUZZ_MAX_LEN_state = 4000
FUZZ_MAX_LEN_jsonnum = 16384

# clang, and its libFuzzer runtime (libclang-rt-N-dev, N the major version of clang), which
# has no command or pkg-config module to look for: when a probe program does not link with
# -fsanitize=fuzzer, it is named as missing under a command name that exists nowhere.
# Expanded only by the fuzz recipe.
FUZZ_CLANG_MAJOR = $(or $(shell $(FUZZ_CC) -dumpversion 2>/dev/null | cut -d. -f1),14)
FUZZ_RT_LINKS = $(shell printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, \
    unsigned long n) { return d && n; }\n' | $(FUZZ_CC) -fsanitize=fuzzer -x c - \
    -o /dev/null 2>/dev/null && echo yes)
DEPS_FUZZ = cmd:$(FUZZ_CC):clang \
    $(if $(FUZZ_RT_LINKS),,cmd:libfuzzer-runtime:libclang-rt-$(FUZZ_CLANG_MAJOR)-dev)

FUZZ_OBJ = $(BUILD)/tests/fuzz/common.o $(BUILD)/cli/npy.o
FUZZ_REPLAY_BIN = $(FUZZ_TARGETS:%=$(BUILD)/tests/fuzz/fuzz_%)

.PHONY: fuzz fuzz-replay fuzz-bin fuzz-corpus
# Objects made by the pattern rules below, kept (make would delete them as intermediates).
.SECONDARY: $(FUZZ_TARGETS:%=$(BUILD)/tests/fuzz/fuzz_%.o) $(BUILD)/tests/fuzz/replay.o \
    $(BUILD)/tests/fuzz/common.o

$(BUILD)/tests/fuzz/%.o: tests/fuzz/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(JANSSON_CFLAGS) -Icli $(FUZZ_EXTRA_CFLAGS) -c $< -o $@

# The HTTP front end runs the server in the target's process: its objects, main.c aside.
FUZZ_SERVER_OBJ = $(filter-out %/server/main.o,$(SERVER_OBJ))
$(BUILD)/tests/fuzz/fuzz_http.o: FUZZ_EXTRA_CFLAGS = $(SERVER_CFLAGS) -Iserver
$(BUILD)/tests/fuzz/fuzz_http $(BUILD)/fuzz_http: $(FUZZ_SERVER_OBJ)
$(BUILD)/tests/fuzz/fuzz_http $(BUILD)/fuzz_http: FUZZ_EXTRA_LIBS = $(SERVER_LIBS) -lpthread

# The monitors' decoders: the server objects that hold them, and config.o for the defaults of
# the server's flags (the limits a server started without flags applies). -iquote: server/'s
# monitor.h before cli/'s, which the -Icli of every target would find first.
FUZZ_MONITOR_OBJ = $(addprefix $(BUILD)/server/,monitor_config.o monitor.o late.o config.o origin.o)
$(BUILD)/tests/fuzz/fuzz_monitor.o: FUZZ_EXTRA_CFLAGS = -iquote server
$(BUILD)/tests/fuzz/fuzz_monitor $(BUILD)/fuzz_monitor: $(FUZZ_MONITOR_OBJ)
$(BUILD)/tests/fuzz/fuzz_monitor $(BUILD)/fuzz_monitor: FUZZ_EXTRA_LIBS = -lpthread

# --state's kind and password (server/state_url.c).
$(BUILD)/tests/fuzz/fuzz_state.o: FUZZ_EXTRA_CFLAGS = -iquote server
$(BUILD)/tests/fuzz/fuzz_state $(BUILD)/fuzz_state: $(BUILD)/server/state_url.o
# The token file and the Authorization check: the server's auth.o.
$(BUILD)/tests/fuzz/fuzz_auth.o: FUZZ_EXTRA_CFLAGS = -iquote server
$(BUILD)/tests/fuzz/fuzz_auth $(BUILD)/fuzz_auth: $(BUILD)/server/auth.o $(BUILD)/server/readfile.o
$(BUILD)/tests/fuzz/fuzz_auth $(BUILD)/fuzz_auth: FUZZ_EXTRA_LIBS = -lpthread

# With the replay driver: the project's compiler and flags.
$(BUILD)/tests/fuzz/fuzz_%: $(BUILD)/tests/fuzz/fuzz_%.o $(BUILD)/tests/fuzz/replay.o \
        $(FUZZ_OBJ) $(PROTO_OBJ) $(LIBA)
	$(CC) $(LDFLAGS_ALL) -o $@ $(filter %.o,$^) $(LIBA) $(JANSSON_LIBS) $(FUZZ_EXTRA_LIBS) -lm

# With libFuzzer: made by the sub-make of `fuzz`, where BUILD is $(FUZZ_BUILD), CC clang and
# SAN fuzzer-no-link,address,undefined (so the library and proto objects are clang's and
# instrumented, by the Makefile's own rules and flags, the ISA-specific ones included).
$(BUILD)/fuzz_%: $(BUILD)/tests/fuzz/fuzz_%.o $(FUZZ_OBJ) $(PROTO_OBJ) $(LIBA)
	$(CC) $(LDFLAGS_ALL) -fsanitize=fuzzer -o $@ $(filter %.o,$^) $(LIBA) $(JANSSON_LIBS) \
	    $(FUZZ_EXTRA_LIBS) -lm

fuzz-bin: $(FUZZ_TARGETS:%=$(BUILD)/fuzz_%)

# -Werror as in make check, unless WERROR is given.
fuzz-replay: WERROR = $(CHECK_WERROR)
# (The path has a slash, so the shell runs it as it is: BUILD may be absolute.)
fuzz-replay: $(FUZZ_REPLAY_BIN)
	@set -e; for t in $(FUZZ_TARGETS); do \
	    $(BUILD)/tests/fuzz/fuzz_$$t tests/fuzz/corpus/$$t \
	        $$(test -d tests/fuzz/regressions/$$t && echo tests/fuzz/regressions/$$t); \
	done

fuzz:
	@$(DEPS_SH) $(DEPS_BUILD) $(DEPS_FUZZ)
	@$(MAKE) -f $(FUZZ_MK) --no-print-directory BUILD=$(FUZZ_BUILD) CC=$(FUZZ_CC) \
	    SAN=fuzzer-no-link,address,undefined FUZZ_TARGETS="$(FUZZ_TARGETS)" fuzz-bin
	@FUZZ_BUILD=$(FUZZ_BUILD) FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_ARGS="$(FUZZ_ARGS)" \
	    $(foreach t,$(FUZZ_TARGETS),FUZZ_MAX_LEN_$(t)=$(FUZZ_MAX_LEN_$(t))) \
	    sh tests/fuzz/run.sh $(FUZZ_TARGETS)

fuzz-corpus:
	$(PYTHON) tests/fuzz/make_corpus.py
	$(PYTHON) tests/fuzz/make_monitor_corpus.py

-include $(wildcard $(BUILD)/tests/fuzz/*.d)

endif # FUZZ_MK_READ
