# ClusterWS: the two commands a fresh Debian 12 machine needs.
#   make demo   — install what is missing, build, run the two-node demo
#   make test   — install what is missing, run the whole test suite
#                 (Swift tests, then the demo in a real headless browser)
export PATH := $(PATH):/opt/swift/usr/bin

.PHONY: setup demo demo-cluster test unit e2e bench

setup:
	@bash scripts/setup.sh

demo: setup
	swift run Demo $(ARGS)

# The same demo on an embedded Redis Cluster (3 masters + 3 replicas, sharded pub/sub).
demo-cluster: setup
	swift run Demo --redis-cluster $(ARGS)

# The whole suite: unit and integration tests, then the browser test.
test: unit e2e

# Two runs: the Redis Cluster suites (six redis-servers per cluster, masters
# killed on purpose) apart from the timing-sensitive rest, so neither slows the other.
CLUSTER_SUITES = RedisClusterClientTests|RedisShardedSubscriberTests|RedisClusterFailoverTests|RoutingTests

unit: setup
	swift test --skip '$(CLUSTER_SUITES)' $(ARGS)
	swift test --skip-build --filter '$(CLUSTER_SUITES)' $(ARGS)

e2e: setup
	@bash scripts/setup-e2e.sh
	swift build --product Demo
	python3 scripts/e2e.py
	python3 scripts/e2e.py --redis-cluster

bench: setup
	swift run -c release Benchmarks $(ARGS)
