# make soak [SOAK_SECONDS=600] [SOAK_CLIENTS=64] [SOAK_SEED=1] [SOAK_SAN=thread]
#
# tests/soak/soak.py against a server it starts: mixed valid, invalid, large, slow, aborted and
# v2 traffic from SOAK_CLIENTS clients for SOAK_SECONDS, then SIGHUP and SIGTERM under load.
# Reports counts, latencies, the RSS, descriptor and heap series, and fails on an unexpected
# status, a wrong or lost answer, growth of RSS (not under a sanitizer), descriptors or heap,
# or an exit status other than 0.
# SOAK_SAN=thread builds the server with ThreadSanitizer in build/tsan (any other SAN value in
# build/soak-san) and soaks that one. The report is written to <build dir>/soak/.
SOAK_SECONDS ?= 600
SOAK_CLIENTS ?= 64
SOAK_SEED ?= 1
SOAK_SAN ?=
SOAK_BUILD = $(if $(SOAK_SAN),$(if $(filter thread,$(SOAK_SAN)),build/tsan,build/soak-san),$(BUILD))

.PHONY: soak
soak:
	@$(DEPS_SH) --check $(DEPS_BUILD)
	@$(MAKE) --no-print-directory BUILD=$(SOAK_BUILD) SAN=$(SOAK_SAN) build
	$(PYTHON) tests/soak/soak.py --server $(SOAK_BUILD)/maskloss-server --seconds $(SOAK_SECONDS) \
	    --clients $(SOAK_CLIENTS) --seed $(SOAK_SEED) --sanitizer "$(SOAK_SAN)"
