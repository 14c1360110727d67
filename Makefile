# maskloss -- one Makefile, out-of-tree builds in $(BUILD).
#
#   make                 build/libmaskloss.a, build/libmaskloss.so, build/maskloss,
#                        build/maskloss-server
#   make run             build and start the server on 127.0.0.1:8080 (RUN_ARGS=... to add flags)
#   make test            install missing Debian packages (as root), build, run every test
#                        (unit, CLI, end-to-end against the server), then the same tests under
#                        AddressSanitizer + UndefinedBehaviorSanitizer
#   make bench           maskloss bench (kernels), then wrk against build/maskloss-server on a
#                        free port (BENCH_ARGS=...)
#   make bench-server    the server against nginx serving the same answer; one large request
#   make SAN=address,undefined check   one sanitizer build and run (in build/san)
#   make install PREFIX=/usr/local
#   make format | lint | clean

PREFIX ?= /usr/local
SAN ?=
BUILD ?= $(if $(SAN),build/san,build)

CC ?= cc
PKG_CONFIG ?= pkg-config
OPT ?= -O2
WARN = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
# _POSIX_C_SOURCE: uv.h needs pthread_rwlock_t, which strict C11 hides.
CFLAGS_ALL = -std=c11 -D_POSIX_C_SOURCE=200809L $(OPT) -g $(WARN) -fPIC -MMD -MP \
             -Ilib/include -Iproto $(if $(SAN),-fsanitize=$(SAN) -fno-omit-frame-pointer \
             -fno-sanitize-recover=all) $(CFLAGS)
LDFLAGS_ALL = $(if $(SAN),-fsanitize=$(SAN)) $(LDFLAGS)

# Debian packages behind each pkg-config name (scripts/deps.sh installs missing ones).
DEPS_BUILD = jansson:libjansson-dev libmicrohttpd:libmicrohttpd-dev libuv:libuv1-dev
DEPS_TEST = cmocka:libcmocka-dev py:prometheus_client:python3-prometheus-client py:numpy:python3-numpy \
            cmd:curl:curl
DEPS_BENCH = cmd:wrk:wrk cmd:nginx:nginx-light

# The end-to-end tests use Debian's Python, where Debian's python3-* packages live.
PYTHON ?= /usr/bin/python3

JANSSON_CFLAGS = $(shell $(PKG_CONFIG) --cflags jansson 2>/dev/null)
JANSSON_LIBS = $(shell $(PKG_CONFIG) --libs jansson 2>/dev/null)
CMOCKA_CFLAGS = $(shell $(PKG_CONFIG) --cflags cmocka 2>/dev/null)
CMOCKA_LIBS = $(shell $(PKG_CONFIG) --libs cmocka 2>/dev/null)
SERVER_CFLAGS = $(shell $(PKG_CONFIG) --cflags libmicrohttpd libuv jansson 2>/dev/null)
SERVER_LIBS = $(shell $(PKG_CONFIG) --libs libmicrohttpd libuv jansson 2>/dev/null)

LIB_SRC = $(wildcard lib/src/*.c)
PROTO_SRC = $(wildcard proto/*.c)
CLI_SRC = $(wildcard cli/*.c)
SERVER_SRC = $(wildcard server/*.c)
TEST_SRC = $(wildcard tests/test_*.c)

LIB_OBJ = $(LIB_SRC:%.c=$(BUILD)/%.o)
# The fused kernels and the pointwise formulas once more per x86-64 instruction set, picked at
# run time (lib/src/simd.h); the objects above are the baseline (portable) variant.
ISA_SRC = fast kernels_f32 kernels_f64
ifneq ($(findstring x86_64,$(shell $(CC) -dumpmachine)),)
LIB_OBJ += $(foreach i,avx2 avx512,$(ISA_SRC:%=$(BUILD)/lib/isa/%_$(i).o))
endif
ISA_FLAGS_avx2 = -mavx2 -mfma -DML__ISA_AVX2
ISA_FLAGS_avx512 = -mavx512f -mavx512vl -mavx512dq -mavx512bw -mavx2 -mfma -DML__ISA_AVX512
PROTO_OBJ = $(PROTO_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ = $(CLI_SRC:%.c=$(BUILD)/%.o)
SERVER_OBJ = $(SERVER_SRC:%.c=$(BUILD)/%.o)
TEST_BIN = $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

LIBA = $(BUILD)/libmaskloss.a
LIBSO = $(BUILD)/libmaskloss.so
CLI = $(BUILD)/maskloss
SERVER = $(BUILD)/maskloss-server

.PHONY: all build deps deps-test test check e2e run bench bench-server accuracy clean install \
        format lint
# Dependencies first, then a fresh make that sees their pkg-config flags.
all: deps
	@$(MAKE) --no-print-directory build

build: $(LIBA) $(LIBSO) $(CLI) $(SERVER)

deps:
	@sh scripts/deps.sh $(DEPS_BUILD)

deps-test:
	@sh scripts/deps.sh $(DEPS_BUILD) $(DEPS_TEST)

# The kernels: -O3 for the vectoriser, which also needs -fno-trapping-math to turn the float
# selects into blends (values are unchanged: it only drops the promise about floating-point
# exception flags). -ffp-contract=off, the -std=c11 default, said explicitly: no implicit
# FMA contraction (the explicit fmaf of vmath.h is the same everywhere), so every
# instruction set gives the same bits.
KERNEL_OPT = -O3 -fno-trapping-math -ffp-contract=off
$(BUILD)/lib/src/fast.o $(BUILD)/lib/src/kernels_f32.o $(BUILD)/lib/src/kernels_f64.o: OPT = $(KERNEL_OPT)

$(BUILD)/lib/%.o: lib/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/lib/isa/%_avx2.o: lib/src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(KERNEL_OPT) $(ISA_FLAGS_avx2) -c $< -o $@

$(BUILD)/lib/isa/%_avx512.o: lib/src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(KERNEL_OPT) $(ISA_FLAGS_avx512) -c $< -o $@

$(BUILD)/proto/%.o: proto/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(JANSSON_CFLAGS) -c $< -o $@

$(BUILD)/cli/%.o: cli/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(JANSSON_CFLAGS) -c $< -o $@

$(BUILD)/server/%.o: server/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(SERVER_CFLAGS) -c $< -o $@

$(BUILD)/tests/%.o: tests/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(JANSSON_CFLAGS) $(CMOCKA_CFLAGS) -c $< -o $@

$(LIBA): $(LIB_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

$(LIBSO): $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,libmaskloss.so.0 $(LDFLAGS_ALL) -o $@ $^ -lm

$(CLI): $(CLI_OBJ) $(PROTO_OBJ) $(LIBA)
	$(CC) $(LDFLAGS_ALL) -o $@ $(CLI_OBJ) $(PROTO_OBJ) $(LIBA) $(JANSSON_LIBS) -lm

$(SERVER): $(SERVER_OBJ) $(PROTO_OBJ) $(LIBA)
	$(CC) $(LDFLAGS_ALL) -o $@ $(SERVER_OBJ) $(PROTO_OBJ) $(LIBA) $(SERVER_LIBS) -lm

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(PROTO_OBJ) $(LIBA)
	$(CC) $(LDFLAGS_ALL) -o $@ $< $(PROTO_OBJ) $(LIBA) $(JANSSON_LIBS) $(CMOCKA_LIBS) -lm -lpthread

# One build's tests: the cmocka suites (run from the root so tests/data is found), the
# command-line tests against this build's CLI, then the end-to-end tests against this
# build's server.
check: deps-test
	@$(MAKE) --no-print-directory build $(TEST_BIN)
	@set -e; for t in $(TEST_BIN); do echo "== $$t"; ./$$t; done
	@sh tests/cli_test.sh $(CLI)
	@$(PYTHON) tests/npy_test.py $(CLI)
	@sh tests/docker_check.sh $(SERVER)
	@$(MAKE) --no-print-directory e2e

e2e:
	@echo "== tests/e2e against $(SERVER)"
	@$(PYTHON) tests/e2e/run.py --server $(SERVER)

run: all
	exec ./$(SERVER) --bind 127.0.0.1 --port 8080 $(RUN_ARGS)

# wrk against a server started here on a free port (BENCH_ARGS="--duration 10 --runs 3").
bench: all
	@sh scripts/deps.sh $(DEPS_BENCH)
	./$(CLI) bench
	@$(PYTHON) tests/bench/wrk.py $(SERVER) $(BENCH_ARGS)

# POST /v1/loss against nginx serving the same answer as a static file, and one 1000x1000
# binary v2 request end to end.
bench-server: all
	@sh scripts/deps.sh $(DEPS_BENCH)
	@$(PYTHON) tests/bench/wrk.py $(SERVER) --nginx $(BENCH_ARGS)

test: deps-test
	@$(MAKE) --no-print-directory check
	@echo "== the same tests under AddressSanitizer + UndefinedBehaviorSanitizer"
	@$(MAKE) --no-print-directory SAN=address,undefined check

# Summation accuracy on 16M float32 elements (argument: ACCURACY_N).
ACCURACY_N ?= 16777216
accuracy: all
	@$(MAKE) --no-print-directory $(BUILD)/tests/accuracy
	./$(BUILD)/tests/accuracy $(ACCURACY_N)

install: all
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/bin \
	    $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 $(LIBA) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(LIBSO) $(DESTDIR)$(PREFIX)/lib/libmaskloss.so.0
	ln -sf libmaskloss.so.0 $(DESTDIR)$(PREFIX)/lib/libmaskloss.so
	install -m 644 lib/include/maskloss.h $(DESTDIR)$(PREFIX)/include/
	install -m 755 $(CLI) $(SERVER) $(DESTDIR)$(PREFIX)/bin/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(shell sed -n 's/^#define ML_VERSION "\(.*\)"/\1/p' lib/include/maskloss.h)|' \
	    maskloss.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/maskloss.pc

format:
	clang-format -i lib/include/*.h lib/src/*.[ch] proto/*.[ch] cli/*.[ch] server/*.[ch] tests/*.c

lint:
	clang-format --dry-run --Werror lib/include/*.h lib/src/*.[ch] proto/*.[ch] cli/*.[ch] server/*.[ch] tests/*.c
	cppcheck --quiet --inline-suppr --error-exitcode=1 --enable=warning,portability --std=c11 \
	    --suppress=missingIncludeSystem -Ilib/include -Iproto lib/src proto cli server

clean:
	rm -rf build

-include $(LIB_OBJ:.o=.d) $(PROTO_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(SERVER_OBJ:.o=.d) $(TEST_BIN:=.d)
