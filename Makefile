# metastore — see README.md. `make run` starts a single-node server,
# `make test` runs every test that CI runs.

GO      ?= go
BIN     := bin
GOFLAGS ?=

.PHONY: all build run test test-unit test-compat tools bench bench-auth vet fmt lint clean

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

clean:
	rm -rf $(BIN)
