# ClusterWS: the two commands a fresh Debian 12 machine needs.
#   make demo   — install what is missing, build, run the two-node demo
#   make test   — install what is missing, run the whole test suite
#                 (Swift tests, then the demo in a real headless browser)
export PATH := $(PATH):/opt/swift/usr/bin

.PHONY: setup demo demo-cluster test unit e2e bench bench-micro bench-micro-update fuzz fuzz-ci autobahn

setup:
	@bash scripts/setup.sh

demo: setup
	swift run Demo $(ARGS)

# The same demo on an embedded Redis Cluster (3 masters + 3 replicas, sharded pub/sub).
demo-cluster: setup
	swift run Demo --redis-cluster $(ARGS)

# The whole suite: unit and integration tests, a short fuzzing pass, the micro-benchmark
# thresholds, Autobahn|Testsuite, then the browser test.
test: unit fuzz-ci bench-micro autobahn e2e

# Autobahn|Testsuite's fuzzing client, all 517 cases (compression included), against
# `Benchmarks echo` (release build: the debug one takes ~20 min). Installs the suite
# (Python 2.7 under pyenv) if missing. Report in artifacts/autobahn/ (summary.md).
# AUTOBAHN_CASES=1.1.1,12.1.1 runs a subset (exact ids; `*` patterns match prefixes).
autobahn: setup
	AUTOBAHN_CONFIG=release bash scripts/autobahn.sh

# Four runs: the Redis Cluster suites (six redis-servers per cluster) apart from
# the rest, so neither slows the other; the failover suite alone (its bounds are
# timings under faults: masters are killed on purpose, and a busy machine makes
# healthy shards look slow); and the hostile-client suite alone, so its RSS
# budgets measure only it.
CLUSTER_SUITES = RedisClusterClientTests|RedisShardedSubscriberTests|RoutingTests|HistoryRecoveryTests|PresenceTests
FAILOVER_SUITES = RedisClusterFailoverTests
ALONE_SUITES = HostileClientTests

unit: setup
	swift test --skip '$(CLUSTER_SUITES)|$(FAILOVER_SUITES)|$(ALONE_SUITES)' $(ARGS)
	swift test --skip-build --filter '$(CLUSTER_SUITES)' $(ARGS)
	swift test --skip-build --filter '$(FAILOVER_SUITES)' $(ARGS)
	swift test --skip-build --filter '$(ALONE_SUITES)' $(ARGS)

# libFuzzer over every decoder of untrusted input (envelope, handshake, frames,
# RESP, DistributedFD), FUZZ_SECONDS each, from the committed seed corpus (a
# working copy grows in .build-fuzz/corpus). A finding stops the run and leaves
# its input in Fuzz/findings/: add it to Fuzz/Regressions/<target>/ with the fix.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS = envelope handshake frames resp fd

fuzz: setup
	swift build --product clusterws-fuzz --scratch-path .build-fuzz -Xswiftc -sanitize=fuzzer -Xcc -DCLUSTERWS_LIBFUZZER
	@mkdir -p Fuzz/findings
	@set -e; for target in $(FUZZ_TARGETS); do \
	  mkdir -p .build-fuzz/corpus/$$target; \
	  echo "fuzz: $$target for $(FUZZ_SECONDS) s"; \
	  CLUSTERWS_FUZZ_TARGET=$$target .build-fuzz/debug/clusterws-fuzz -max_total_time=$(FUZZ_SECONDS) -max_len=8192 \
	    -print_final_stats=1 -artifact_prefix=Fuzz/findings/$$target- \
	    .build-fuzz/corpus/$$target Fuzz/Corpus/$$target Fuzz/Regressions/$$target 2>&1 \
	    | grep -E '^(Done|stat::number_of_executed_units|==|.*FINDING|.*Fatal|.*crash)' || true; \
	  test -z "$$(ls Fuzz/findings/$$target-* 2>/dev/null)" || { echo "fuzz: $$target found a problem:"; ls Fuzz/findings/$$target-*; exit 1; }; \
	done

# The short pass CI runs (make test).
fuzz-ci:
	$(MAKE) fuzz FUZZ_SECONDS=15

e2e: setup
	@bash scripts/setup-e2e.sh
	swift build --product Demo
	python3 scripts/e2e.py
	python3 scripts/e2e.py --redis-cluster

bench: setup
	swift build -c release
	swift run -c release Benchmarks $(ARGS)

# The relay's per-message steps (package-benchmark, ClusterWSMicroBenchmarks) against
# Thresholds/: fails when a step allocates more (0.1 per operation) or gets 4x slower.
# Better than the thresholds passes, with a note to record the new figures.
bench-micro: setup
	@out=$$(mktemp); swift package benchmark thresholds check --target ClusterWSMicroBenchmarks --no-progress >$$out 2>&1; rc=$$?; \
	grep -v '^\[' $$out | grep -v 'prohibited flag' | tail -40; \
	if grep -q "is WORSE than the defined thresholds" $$out; then echo "bench-micro: a regression (above)"; exit 1; fi; \
	if grep -q "is BETTER than the defined thresholds" $$out; then echo "bench-micro: better than Thresholds/ (make bench-micro-update records it)"; exit 0; fi; \
	if grep -q "is EQUAL to the defined thresholds" $$out; then exit 0; fi; \
	echo "bench-micro: the check did not run (exit $$rc)"; exit 1

# Records the current figures as the thresholds (commit Thresholds/ after a deliberate change).
bench-micro-update: setup
	swift package --allow-writing-to-package-directory benchmark thresholds update --target ClusterWSMicroBenchmarks --no-progress
