# picket — the two commands: `make run` and `make test`. See README.md.
CARGO ?= cargo
DATA  ?= ./picket-data

.PHONY: run test deps fmt lint unit bench load release clean deb rpm package-test cross cross-test

## Build and run the agent on the embedded default config (unprivileged, data in ./picket-data,
## file events from ./picket-data/watch). Ctrl-C stops it cleanly.
run:
	$(CARGO) build -p picket
	mkdir -p $(DATA)/watch
	@echo "picket: write files into $(DATA)/watch to see events; Ctrl-C to stop"
	./target/debug/picket run

## Install missing system packages, then formatting, lints, every test, the packages and the
## aarch64/armv7 cross builds under qemu (a target that cannot be installed is a loud SKIP).
test: deps fmt lint unit package-test cross-test

deps:
	./scripts/test-deps.sh

fmt:
	$(CARGO) fmt --all --check

lint:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit:
	CARGO=$(CARGO) ./scripts/unit.sh

## Criterion benchmarks (figures go to docs/BENCHMARKS.md by hand, with the command).
bench:
	$(CARGO) bench --workspace

## The real agent under generated mixed load at 1,000 events/s, syncing to a local mosquitto:
## events/s by kind, drops, CPU, RSS, journal growth, backlog drain (scripts/bench/load.py). The
## binary is the one the amd64 package ships (cross/build.sh, release profile, size flags).
load: deps
	PROFILE=release FEATURES="" ./cross/build.sh x86_64-unknown-linux-gnu
	python3 ./scripts/bench/load.py --picket $${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/picket $(LOAD_ARGS)

## deb and rpm packages (cargo-deb / cargo-generate-rpm, installed on first use); see packaging/README.md.
deb:
	./packaging/build.sh deb

rpm:
	./packaging/build.sh rpm

## Build both packages and check them without installing anything on this machine.
package-test:
	./scripts/package-test.sh

## Edge builds for aarch64/armv7, musl (static) and gnu, profile `edge`, no Sigma, eBPF, collector or libpcap;
## a target rustup cannot install is skipped loudly (cross/README.md).
cross:
	./cross/build.sh

## The aarch64 edge build under qemu-user: --version, replay, signed publish to a TLS mosquitto
## verified by the host collector; armv7 --version.
cross-test:
	./cross/smoke.sh

release:
	$(CARGO) build --release -p picket

clean:
	$(CARGO) clean
