# metastore — see README.md. `make run` starts a single-node server,
# `make test` runs every test that CI runs.

GO      ?= go
BIN     := bin
GOFLAGS ?=

.PHONY: all build run test test-unit test-compat tools bench bench-auth bench-watch vet fmt lint clean soak fuzz

all: build

build:
	$(GO) build -o $(BIN)/metastore ./cmd/metastore

run: build
	./$(BIN)/metastore

# Tools built from etcd's own Go modules (see tests/go.mod): etcdctl and a
# reference etcd server.
tools:
	cd tests && $(GO) build -o ../$(BIN)/ ./tools/etcdctl ./tools/etcd

test: vet test-unit test-compat

test-unit:
	$(GO) test -race -count=1 ./...

test-compat:
	cd tests && $(GO) test -race -count=1 -timeout 15m ./...

# Long forms of the reliability tests (tests/reliability, tests/e2e): 100
# SIGKILL/restart cycles and longer linearizability runs.
soak:
	cd tests && METASTORE_SOAK=1 $(GO) test -race -count=1 -timeout 3h -v -run 'Linearizable|Crash' ./reliability ./e2e

# Every fuzz target for FUZZTIME each (go test -fuzz takes one target at a
# time). New corpus entries land in the Go build cache; the committed seed
# corpora are in each package's testdata/fuzz.
FUZZTIME ?= 1m
FUZZ_TARGETS := ./mvcc:FuzzKeyEncoding ./server:FuzzTxnValidation ./server:FuzzRequestValidation \
	./server/config:FuzzLoad ./auth:FuzzDecodeUser ./auth:FuzzPermCheck
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "== $$name ($$pkg) for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

vet:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd tests && $(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

bench: build tools
	./scripts/bench.sh

# etcd and metastore side by side with auth enabled (docs/benchmarks-auth.md).
bench-auth: build tools
	./scripts/bench-auth.sh

# Watch benchmarks, etcd and metastore side by side (docs/benchmarks-watch.md).
bench-watch: build tools
	./scripts/bench-watch.sh

clean:
	rm -rf $(BIN)
