# ClusterWS: the two commands a fresh Debian 12 machine needs.
#   make demo   — install what is missing, build, run the demo
#   make test   — install what is missing, run the whole test suite
export PATH := $(PATH):/opt/swift/usr/bin

.PHONY: setup demo test bench

setup:
	@bash scripts/setup.sh

demo: setup
	swift run Demo $(ARGS)

test: setup
	swift test $(ARGS)

bench: setup
	swift run -c release Benchmarks $(ARGS)
