# maskloss -- one Makefile, out-of-tree builds in $(BUILD).
#
#   make                 build/libmaskloss.a, build/libmaskloss.so.0.1.0 (soname libmaskloss.so.0,
#                        with the .so.0 and .so links), build/maskloss, build/maskloss-server.
#                        Installs nothing: a missing -dev package stops it with the pkg-config
#                        module and the Debian package to install
#   make deps            install missing build packages (apt-get, as root; else print the command)
#   make run             install missing packages, build and start the server on 127.0.0.1:8080
#                        (RUN_ARGS=... to add flags)
#   make test            install missing Debian packages (as root), build with -Werror, run every
#                        test (unit, library packaging, CLI, end-to-end against the server), then
#                        the same tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make check           one build's tests (-Werror; installs nothing)
#   make test-ui         the status page in headless chromium (tests/ui/run.py; part of check)
#   make test-js         the JavaScript package (clients/js) against the server (part of check)
#   make test-image      docker/Dockerfile built with podman and its image tried (tests/image/run.py;
#                        root only, 3-5 min; .ci/run runs it beside make test)
#   make test-cluster    three replicas of the server on a throwaway PostgreSQL behind nginx,
#                        scraped by Prometheus, under load while one is drained and one killed
#                        (tests/cluster/run.py, under a minute; the last step of make test)
#   make bench           maskloss bench (kernels), then wrk against build/maskloss-server on a
#                        free port (BENCH_ARGS=...), and the monitors against /v1/loss
#   make bench-server    the server against nginx serving the same answer; one large request
#   make difftest        maskloss against PyTorch 1.13 itself (-full: ~6000 cases); installs
#                        python3-torch and friends (as root)
#   make accuracy-data   regenerate tests/data/accuracy.json (mpmath, torch)
#   make fuzz            every libFuzzer target for FUZZ_SECONDS (default 60) under ASan+UBSan
#                        (tests/fuzz/fuzz.mk); make check replays their corpus
#   make soak            10 minutes of mixed, hostile traffic against the server, with RSS and
#                        descriptors checked flat (SOAK_SECONDS=N, SOAK_SAN=thread: tests/soak)
#   make SAN=address,undefined check   one sanitizer build and run (in build/san)
#   make install [DESTDIR=...] [PREFIX=/usr/local] [BINDIR=...] [LIBDIR=...] [INCLUDEDIR=...]
#                        (multiarch: LIBDIR=/usr/lib/x86_64-linux-gnu; maskloss.pc follows)
#   make format | lint | clean
#
# CC, CPPFLAGS, CFLAGS and LDFLAGS are honoured (CFLAGS come after the project's own flags, so
# -O and friends override them, except the kernels' flags, which the same bits depend on).

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
SAN ?=
BUILD ?= $(if $(SAN),build/san,build)

CC ?= cc
PKG_CONFIG ?= pkg-config
OPT ?= -O2
# The warnings are always on; -Werror only in the project's own builds (make check and make
# test set WERROR=-Werror): another compiler version may warn where ours does not.
WERROR ?=
WARN = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes $(WERROR)
# _POSIX_C_SOURCE: uv.h needs pthread_rwlock_t, which strict C11 hides.
CFLAGS_ALL = -std=c11 -D_POSIX_C_SOURCE=200809L $(OPT) -g $(WARN) -fPIC -MMD -MP \
             -Ilib/include -Iproto $(if $(SAN),-fsanitize=$(SAN) -fno-omit-frame-pointer \
             -fno-sanitize-recover=all) $(CPPFLAGS) $(CFLAGS)
LDFLAGS_ALL = $(if $(SAN),-fsanitize=$(SAN)) $(CFLAGS) $(LDFLAGS)

# The version, read from lib/include/maskloss.h: the shared library is
# libmaskloss.so.MAJOR.MINOR.PATCH, its soname libmaskloss.so.MAJOR.
ml_version_part = $(shell sed -n 's/^\#define ML_VERSION_$(1) \([0-9][0-9]*\)$$/\1/p' lib/include/maskloss.h)
VERSION_MAJOR := $(call ml_version_part,MAJOR)
VERSION_MINOR := $(call ml_version_part,MINOR)
VERSION_PATCH := $(call ml_version_part,PATCH)
ifneq ($(words $(VERSION_MAJOR) $(VERSION_MINOR) $(VERSION_PATCH)),3)
$(error cannot read ML_VERSION_MAJOR/MINOR/PATCH from lib/include/maskloss.h)
endif
VERSION = $(VERSION_MAJOR).$(VERSION_MINOR).$(VERSION_PATCH)
SONAME = libmaskloss.so.$(VERSION_MAJOR)

# Debian packages behind each pkg-config name. scripts/deps.sh installs missing ones (make deps,
# run, test, bench), or with --check only names them and fails (make, make install, make check).
# PostgreSQL 15 (bookworm's) for the tests' throwaway clusters (tests/e2e/pg.py): Debian keeps
# its server binaries off the PATH, so they are named by path.
DEPS_BUILD = jansson:libjansson-dev libmicrohttpd:libmicrohttpd-dev libuv:libuv1-dev sqlite3:libsqlite3-dev gnutls:libgnutls28-dev \
             libpq:libpq-dev
DEPS_TEST = cmocka:libcmocka-dev py:prometheus_client:python3-prometheus-client py:numpy:python3-numpy \
            cmd:curl:curl cmd:promtool:prometheus cmd:nginx:nginx-light py:yaml:python3-yaml \
            py:jsonschema:python3-jsonschema \
            cmd:/usr/lib/postgresql/15/bin/postgres:postgresql-15 \
            cmd:/usr/lib/postgresql/15/bin/psql:postgresql-client-15 \
            cmd:chromium:chromium cmd:chromedriver:chromium-driver py:selenium:python3-selenium \
            cmd:node:nodejs py:pip:python3-pip py:setuptools:python3-setuptools py:wheel:python3-wheel
DEPS_BENCH = cmd:wrk:wrk cmd:nginx:nginx-light py:numpy:python3-numpy \
             cmd:/usr/lib/postgresql/15/bin/postgres:postgresql-15 \
             cmd:/usr/lib/postgresql/15/bin/psql:postgresql-client-15
# The real frameworks and high precision: the differential test and the accuracy data.
DEPS_DIFF = py:torch:python3-torch py:torchvision:python3-torchvision py:mpmath:python3-mpmath \
            py:numpy:python3-numpy
# The container image built and tried without a Docker engine (make test-image, as root).
DEPS_IMAGE = cmd:podman:podman cmd:debootstrap:debootstrap cmd:openssl:openssl
DEPS_SH = PKG_CONFIG="$(PKG_CONFIG)" sh scripts/deps.sh

# The end-to-end tests use Debian's Python, where Debian's python3-* packages live.
PYTHON ?= /usr/bin/python3

JANSSON_CFLAGS = $(shell $(PKG_CONFIG) --cflags jansson 2>/dev/null)
JANSSON_LIBS = $(shell $(PKG_CONFIG) --libs jansson 2>/dev/null)
CMOCKA_CFLAGS = $(shell $(PKG_CONFIG) --cflags cmocka 2>/dev/null)
CMOCKA_LIBS = $(shell $(PKG_CONFIG) --libs cmocka 2>/dev/null)
# The CLI's https:// (cli/tls.c).
GNUTLS_CFLAGS = $(shell $(PKG_CONFIG) --cflags gnutls 2>/dev/null)
GNUTLS_LIBS = $(shell $(PKG_CONFIG) --libs gnutls 2>/dev/null)
SERVER_CFLAGS = $(shell $(PKG_CONFIG) --cflags libmicrohttpd libuv jansson sqlite3 libpq 2>/dev/null)
SERVER_LIBS = $(shell $(PKG_CONFIG) --libs libmicrohttpd libuv jansson sqlite3 libpq 2>/dev/null)

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
# The PostgreSQL store's migrations (server/pg/NNN_name.sql), embedded by scripts/sql2c.sh.
PG_MIGRATIONS = $(sort $(wildcard server/pg/*.sql))
# The status page's files (server/ui/*.EXT, the extensions embed.sh gives a type: not an
# editor's ui.js~), embedded by scripts/embed.sh; the build's git
# description for /v1/stats.
UI_ASSETS = $(sort $(wildcard $(addprefix server/ui/*.,html css js svg png ico txt)))
SERVER_OBJ = $(SERVER_SRC:%.c=$(BUILD)/%.o) $(BUILD)/server/pg_migrations.o \
             $(BUILD)/server/ui_assets.o $(BUILD)/server/api_assets.o $(BUILD)/server/build_id.o
TEST_BIN = $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

LIBA = $(BUILD)/libmaskloss.a
LIBSO = $(BUILD)/libmaskloss.so.$(VERSION)
# Only the ml_* functions of maskloss.h are exported: the objects are compiled with hidden
# visibility (the header marks the public functions ML_API) and linked with a version script.
LIB_FLAGS = -fvisibility=hidden
LIB_MAP = lib/maskloss.map
CLI = $(BUILD)/maskloss
SERVER = $(BUILD)/maskloss-server

.PHONY: all build deps deps-test test check e2e run bench bench-server accuracy clean install \
        format lint difftest difftest-full accuracy-data test-cluster test-ui test-ui-run \
        test-js test-js-run test-image test-image-build test-image-check deps-image
# Check the build packages (never install them), then build in a make of its own so that no
# compiler runs before the check has passed.
all:
	@$(DEPS_SH) --check $(DEPS_BUILD)
	@$(MAKE) --no-print-directory build

build: $(LIBA) $(LIBSO) $(BUILD)/$(SONAME) $(BUILD)/libmaskloss.so $(CLI) $(SERVER)

deps:
	@$(DEPS_SH) $(DEPS_BUILD)

deps-test:
	@$(DEPS_SH) $(DEPS_BUILD) $(DEPS_TEST)

# The kernels: -O3 for the vectoriser, which also needs -fno-trapping-math to turn the float
# selects into blends (values are unchanged: it only drops the promise about floating-point
# exception flags). -ffp-contract=off, the -std=c11 default, said explicitly: no implicit
# FMA contraction (the explicit fmaf of vmath.h is the same everywhere), so every
# instruction set gives the same bits.
# They come after CFLAGS, which must not change the bits.
KERNEL_OPT = -O3 -fno-trapping-math -ffp-contract=off
$(BUILD)/lib/src/fast.o $(BUILD)/lib/src/kernels_f32.o $(BUILD)/lib/src/kernels_f64.o: LIB_FLAGS += $(KERNEL_OPT)
# A monitor's query adds up a month of buckets of a thousand classes (plain double sums: the
# order of the additions is fixed by the loops, vectorised or not).
$(BUILD)/server/monitor_query.o: SERVER_CFLAGS += -O3
# maskloss bench's memory-read limit: a loop that only reads, vectorised (cli/readlimit.c).
$(BUILD)/cli/readlimit.o: CFLAGS_ALL += -O3

$(BUILD)/lib/%.o: lib/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(LIB_FLAGS) -c $< -o $@

$(BUILD)/lib/isa/%_avx2.o: lib/src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(LIB_FLAGS) $(KERNEL_OPT) $(ISA_FLAGS_avx2) -c $< -o $@

$(BUILD)/lib/isa/%_avx512.o: lib/src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(LIB_FLAGS) $(KERNEL_OPT) $(ISA_FLAGS_avx512) -c $< -o $@

$(BUILD)/proto/%.o: proto/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(JANSSON_CFLAGS) -c $< -o $@

$(BUILD)/cli/%.o: cli/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(JANSSON_CFLAGS) $(GNUTLS_CFLAGS) -c $< -o $@

$(BUILD)/server/pg_migrations.c: $(PG_MIGRATIONS) scripts/sql2c.sh
	@mkdir -p $(dir $@)
	sh scripts/sql2c.sh $@ $(PG_MIGRATIONS)
$(BUILD)/server/pg_migrations.o: $(BUILD)/server/pg_migrations.c
	$(CC) $(CFLAGS_ALL) -Iserver -c $< -o $@
# Files rewritten only when their text changes (FORCE runs the recipe every time; an unchanged
# file keeps its date, so nothing that depends on it is rebuilt): the list of the page's files,
# so that removing one regenerates the table too, and the git description.
$(BUILD)/server/ui_assets.list: FORCE
	@mkdir -p $(dir $@)
	@echo $(UI_ASSETS) >$@.tmp && { cmp -s $@.tmp $@ && rm $@.tmp || mv $@.tmp $@; }
$(BUILD)/server/build_id.c: FORCE
	@mkdir -p $(dir $@)
	@id=$$( [ "$$(git rev-parse --show-toplevel 2>/dev/null)" = "$(CURDIR)" ] && \
	    git describe --always 2>/dev/null | tr -cd 'A-Za-z0-9._+-'); \
	dirty=$$(GIT_OPTIONAL_LOCKS=0 git status --porcelain --untracked-files=no 2>/dev/null); \
	printf '/* Generated by the Makefile: do not edit. */\nconst char mls_build_id[] = "%s%s";\n' \
	    "$${id:-unknown}" "$${id:+$${dirty:+-dirty}}" >$@.tmp && \
	{ cmp -s $@.tmp $@ && rm $@.tmp || mv $@.tmp $@; }
$(BUILD)/server/ui_assets.c: $(UI_ASSETS) $(BUILD)/server/ui_assets.list scripts/embed.sh
	sh scripts/embed.sh $@ $(UI_ASSETS)
# The OpenAPI document, generated from proto/openapi.yaml by scripts/openapi.py and committed
# (make needs no Python): served at /openapi.json.
$(BUILD)/server/api_assets.c: proto/openapi.json scripts/embed.sh
	@mkdir -p $(dir $@)
	sh scripts/embed.sh -n api $@ proto/openapi.json
$(BUILD)/server/ui_assets.o $(BUILD)/server/api_assets.o $(BUILD)/server/build_id.o: %.o: %.c
	$(CC) $(CFLAGS_ALL) -Iserver -c $< -o $@
.PHONY: FORCE
FORCE:
$(BUILD)/server/%.o: server/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(SERVER_CFLAGS) -c $< -o $@

$(BUILD)/tests/%.o: tests/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(JANSSON_CFLAGS) $(CMOCKA_CFLAGS) -c $< -o $@

$(LIBA): $(LIB_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

$(LIBSO): $(LIB_OBJ) $(LIB_MAP)
	$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--version-script=$(LIB_MAP) $(LDFLAGS_ALL) -o $@ \
	    $(LIB_OBJ) -lm

$(BUILD)/$(SONAME) $(BUILD)/libmaskloss.so: $(LIBSO)
	ln -sf $(notdir $(LIBSO)) $@

$(CLI): $(CLI_OBJ) $(PROTO_OBJ) $(LIBA)
	$(CC) $(LDFLAGS_ALL) -o $@ $(CLI_OBJ) $(PROTO_OBJ) $(LIBA) $(JANSSON_LIBS) $(GNUTLS_LIBS) -lm

$(SERVER): $(SERVER_OBJ) $(PROTO_OBJ) $(LIBA)
	$(CC) $(LDFLAGS_ALL) -o $@ $(SERVER_OBJ) $(PROTO_OBJ) $(LIBA) $(SERVER_LIBS) -lm

# test_alloc fails the N-th allocation of the statically linked library and protocol objects.
$(BUILD)/tests/test_alloc: LDFLAGS_ALL += -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc
# test_credentials: the CLI's token and CA-file reading (cli/credentials.c).
$(BUILD)/tests/test_credentials: $(BUILD)/cli/credentials.o
$(BUILD)/tests/test_credentials: LDFLAGS_ALL += $(BUILD)/cli/credentials.o
# test_quota: the server's quotas and --cors-origin list (server/quota.c, server/origin.c).
# test_state_url: --state's kinds and its password kept out of logs (server/state_url.c).
$(BUILD)/tests/test_state_url: $(BUILD)/server/state_url.o
$(BUILD)/tests/test_state_url: LDFLAGS_ALL += $(BUILD)/server/state_url.o
$(BUILD)/tests/test_quota: $(BUILD)/server/quota.o $(BUILD)/server/origin.o
$(BUILD)/tests/test_quota: LDFLAGS_ALL += $(BUILD)/server/quota.o $(BUILD)/server/origin.o
$(BUILD)/tests/%: $(BUILD)/tests/%.o $(PROTO_OBJ) $(LIBA)
	$(CC) $(LDFLAGS_ALL) -o $@ $< $(PROTO_OBJ) $(LIBA) $(JANSSON_LIBS) $(CMOCKA_LIBS) -lm -lpthread

# One build's tests, with -Werror (unless WERROR is given): the cmocka suites (run from the root
# so tests/data is found), the shared library and its installed tree, the command-line tests
# against this build's CLI, then the end-to-end tests against this build's server.
CHECK_WERROR = $(if $(filter command line,$(origin WERROR)),$(WERROR),-Werror)
# Parallel compilation for check's builds, and the cmocka suites JOBS at a time (the longest,
# test_vmath, first; the end-to-end tests have their own E2E_JOBS).
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
check:
	@$(DEPS_SH) --check $(DEPS_BUILD) $(DEPS_TEST)
	@$(MAKE) --no-print-directory -j$(JOBS) WERROR=$(CHECK_WERROR) build $(TEST_BIN)
	@sh tests/unit_run.sh $(JOBS) $(filter %/test_vmath,$(TEST_BIN)) $(filter-out %/test_vmath,$(TEST_BIN))
	@MAKE="$(MAKE)" CC="$(CC)" sh tests/lib_check.sh $(BUILD) $(SAN)
	@sh tests/cli_test.sh $(CLI)
	@echo "== promtool: docker/prometheus rules, tests/prometheus" && \
	    promtool check rules docker/prometheus/*.rules.yml && \
	    promtool test rules tests/prometheus/*.test.yml
	@$(PYTHON) tests/npy_test.py $(CLI)
	@echo "== the fuzz targets over their seed corpus and regressions"
	@$(MAKE) --no-print-directory -j$(JOBS) fuzz-replay
	@sh tests/docker_check.sh $(SERVER)
	@$(PYTHON) tests/deploy_check.py $(SERVER)
	@$(PYTHON) tests/compose_check.py $(SERVER)
	@$(MAKE) --no-print-directory e2e
	@# The JavaScript client and the status page in a browser: the plain build (the server's C
	@# they reach is the routes' that e2e covers under the sanitizers too).
	$(if $(SAN),,@$(MAKE) --no-print-directory test-js-run)
	$(if $(SAN),,@$(MAKE) --no-print-directory test-ui-run)

# Two end-to-end tests at a time (most of their time is waiting; tests/e2e/run.py --jobs).
E2E_JOBS ?= 2
# E2E_AFTER=FILE (.ci/run: written when the image's build in the background has ended): the
# parallel tests run beside that build, the timing tests that run alone wait for FILE, at most
# 10 min, and fail unrun past that (tests/e2e/run.py --after).
e2e:
	@echo "== tests/e2e against $(SERVER)"
	@$(PYTHON) tests/e2e/run.py --server $(SERVER) --jobs $(E2E_JOBS) $(if $(SAN),--sanitized) \
	    $(if $(E2E_AFTER),--after $(E2E_AFTER))
	@# The monitor and late-label suites again on PostgreSQL (the plain build: the store's
	@# code is the same C the sanitized run has just covered on SQLite's paths).
	$(if $(SAN),,@echo "== tests/e2e monitor suites against $(SERVER) on PostgreSQL")
	$(if $(SAN),,@$(PYTHON) tests/e2e/run.py --server $(SERVER) --jobs $(E2E_JOBS) --pg \
	    $(if $(E2E_AFTER),--after $(E2E_AFTER)))

# run, bench, bench-server: install missing packages first, then build in a fresh make that
# sees their pkg-config flags.
run: deps
	@$(MAKE) --no-print-directory build
	exec ./$(SERVER) --bind 127.0.0.1 --port 8080 $(RUN_ARGS)

# wrk against a server started here on a free port (BENCH_ARGS="--duration 10 --runs 3"); then
# the monitors against /v1/loss on a server with a state file (observe, a 1000x1000 observation,
# GET over 30 days of buckets; about 75 s at the defaults); late labels on 1M stored predictions;
# tokens and TLS against plain HTTP on small requests (shared.py); the state on SQLite against
# PostgreSQL, one replica and three (replicas.py, about 3 min: docs/operations.md); the
# instructions a /v1/loss request costs under callgrind (instructions.py), side by side with
# another build's server when BENCH_BASE=path/to/maskloss-server is given.
bench:
	@$(DEPS_SH) $(DEPS_BUILD) $(DEPS_BENCH)
	@$(MAKE) --no-print-directory build
	$(CLI) bench
	@$(PYTHON) tests/bench/wrk.py $(SERVER) $(BENCH_ARGS)
	@$(PYTHON) tests/bench/monitors.py $(SERVER) $(BENCH_ARGS)
	@$(PYTHON) tests/bench/late.py $(SERVER) $(BENCH_ARGS)
	@$(PYTHON) tests/bench/shared.py $(SERVER) $(BENCH_ARGS)
	@$(PYTHON) tests/bench/replicas.py $(SERVER) $(BENCH_ARGS)
	@$(PYTHON) tests/bench/instructions.py $(SERVER) $(BENCH_BASE)

# POST /v1/loss against nginx serving the same answer as a static file, and one 1000x1000
# binary v2 request end to end.
bench-server:
	@$(DEPS_SH) $(DEPS_BUILD) $(DEPS_BENCH)
	@$(MAKE) --no-print-directory build
	@$(PYTHON) tests/bench/wrk.py $(SERVER) --nginx $(BENCH_ARGS)

test: deps-test
	@$(MAKE) --no-print-directory check
	@echo "== the same tests under AddressSanitizer + UndefinedBehaviorSanitizer"
	@$(MAKE) --no-print-directory SAN=address,undefined check
	@$(MAKE) --no-print-directory test-cluster

# The cluster test against this build's server (nginx, Prometheus and PostgreSQL from DEPS_TEST;
# installs nothing): its figures, and any mismatch, printed.
test-cluster:
	@$(DEPS_SH) --check $(DEPS_BUILD) $(DEPS_TEST)
	@$(MAKE) --no-print-directory WERROR=$(CHECK_WERROR) build
	@echo "== tests/cluster against $(SERVER)"
	@$(PYTHON) tests/cluster/run.py --server $(SERVER)

# The status page in headless chromium against this build's server (tests/ui/run.py: every
# figure against the API, the token prompt, screenshots in $(BUILD)/ui-shots; UI_ARGS=--docs
# copies the README's two to docs/). About 15 s.
test-ui-run:
	@echo "== tests/ui: the status page in chromium against $(SERVER)"
	@$(PYTHON) tests/ui/run.py --server $(SERVER) $(UI_ARGS)

# The JavaScript package (clients/js) with Node's test runner against this build's server,
# started by the tests on free ports, and in headless chromium. About 35 s (mostly waiting for a
# rate limit and chromium). Every fetch of node's is recorded (clients/js/test/record.js) and
# checked against proto/openapi.json (tests/e2e/contract.py).
JS_EXCHANGES = $(abspath $(BUILD))/js-exchanges.jsonl
test-js-run:
	@echo "== clients/js: node --test against $(SERVER)"
	@rm -f $(JS_EXCHANGES)
	@CONTRACT_EXCHANGES=$(JS_EXCHANGES) NODE_OPTIONS=--import=$(abspath clients/js/test/record.js) \
	    MASKLOSS_SERVER=$(abspath $(SERVER)) node --test clients/js/test/*.test.js
	@$(PYTHON) tests/e2e/contract.py $(JS_EXCHANGES) 40

# Either alone: check the packages (installing none), build with -Werror, then run it.
test-ui test-js:
	@$(DEPS_SH) --check $(DEPS_BUILD) $(DEPS_TEST)
	@$(MAKE) --no-print-directory WERROR=$(CHECK_WERROR) build
	@$(MAKE) --no-print-directory $@-run

# docker/Dockerfile built for real (debootstrap'ed bookworm, podman build --format docker), its
# runtime stage run as uid 10001 and checked over HTTP (tests/image/run.py: what it checks).
# Root only (skipped otherwise); about 3-5 min and 700 MB in IMAGE_DIR, removed at the end.
# test-image-build then test-image-check are the same in two steps (.ci/run overlaps the first).
# test-image-build only checks its packages (deps.sh --check): .ci/run installs them first
# (make deps-image), then runs it beside make test, whose apt-get would find the lock taken.
IMAGE_DIR ?= /tmp/maskloss-image
deps-image:
	@if [ "$$(id -u)" = 0 ]; then $(DEPS_SH) $(DEPS_IMAGE); fi
test-image test-image-check: deps-image
test-image test-image-build test-image-check:
	$(if $(filter test-image-build,$@),@if [ "$$(id -u)" = 0 ]; then $(DEPS_SH) --check $(DEPS_IMAGE); fi)
	@$(PYTHON) tests/image/run.py --dir $(IMAGE_DIR) $(if $(filter test-image-build,$@),--build-only) \
	    $(if $(filter test-image-check,$@),--check-only)

# Summation accuracy on 16M float32 elements (argument: ACCURACY_N).
ACCURACY_N ?= 16777216
accuracy: all
	@$(MAKE) --no-print-directory $(BUILD)/tests/accuracy
	$(if $(filter /%,$(BUILD)),,./)$(BUILD)/tests/accuracy $(ACCURACY_N)

# Against PyTorch 1.13 itself (tests/diff/README.md): ~430 cases (difftest) or ~6000
# (difftest-full), every disagreement settled by the exact value (mpmath).
difftest difftest-full:
	@$(DEPS_SH) $(DEPS_BUILD) $(DEPS_DIFF)
	@$(MAKE) --no-print-directory build
	$(PYTHON) tests/diff/torch_diff.py $(if $(filter difftest,$@),--quick) --maskloss $(CLI)

# Regenerates tests/data/accuracy.json (exact values by mpmath, the frameworks' own by torch
# and numpy); make test only reads it.
accuracy-data:
	@$(DEPS_SH) $(DEPS_DIFF)
	$(PYTHON) tests/accuracy/gen.py

# Builds (checking the build packages, installing none), then copies. DESTDIR for staging
# (packaging); LIBDIR for multiarch.
install: all
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(BINDIR) \
	    $(DESTDIR)$(PKGCONFIGDIR)
	install -m 644 $(LIBA) $(DESTDIR)$(LIBDIR)/
	install -m 755 $(LIBSO) $(DESTDIR)$(LIBDIR)/
	ln -sf $(notdir $(LIBSO)) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(notdir $(LIBSO)) $(DESTDIR)$(LIBDIR)/libmaskloss.so
	install -m 644 lib/include/maskloss.h $(DESTDIR)$(INCLUDEDIR)/
	install -m 755 $(CLI) $(SERVER) $(DESTDIR)$(BINDIR)/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' \
	    -e 's|@VERSION@|$(VERSION)|' maskloss.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/maskloss.pc

format:
	clang-format -i lib/include/*.h lib/src/*.[ch] proto/*.[ch] cli/*.[ch] server/*.[ch] tests/*.c \
	    examples/*.c

lint:
	clang-format --dry-run --Werror lib/include/*.h lib/src/*.[ch] proto/*.[ch] cli/*.[ch] server/*.[ch] tests/*.c \
	    examples/*.c
	cppcheck --quiet --inline-suppr --error-exitcode=1 --enable=warning,portability --std=c11 \
	    --suppress=missingIncludeSystem -Ilib/include -Iproto lib/src proto cli server examples

# This configuration's build directory (build, holding build/san, by default).
clean:
	rm -rf $(BUILD)

# The soak (tests/soak/soak.mk) and the fuzz targets (tests/fuzz/fuzz.mk: make fuzz,
# fuzz-replay).
include tests/soak/soak.mk
include tests/fuzz/fuzz.mk

-include $(LIB_OBJ:.o=.d) $(PROTO_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(SERVER_OBJ:.o=.d) $(TEST_BIN:=.d)
