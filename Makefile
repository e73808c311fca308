# metastore — see README.md. `make run` starts a single-node server,
# `make test` runs every test that CI runs.

GO      ?= go
BIN     := bin
GOFLAGS ?=

.PHONY: all build run test test-unit test-compat test-isolation test-k8s soak-k8s test-rangestream test-rangestream-large test-upstream test-migrate-old tools bench bench-auth bench-watch bench-policy bench-restart vet fmt lint clean soak fuzz policies test-lease-scale bench-lease cluster soak-cluster bench-cluster

all: build

build:
	$(GO) build -o $(BIN)/metastore ./cmd/metastore

run: build
	./$(BIN)/metastore

# Tools built from etcd's own Go modules (see tests/go.mod): etcdctl and a
# reference etcd server.
tools:
	cd tests && $(GO) build -o ../$(BIN)/ ./tools/etcdctl ./tools/etcd
	cd tests/tools/benchmark && $(GO) build -o ../../../$(BIN)/ .

test: vet test-unit test-compat test-k8s test-rangestream test-isolation

test-unit:
	$(GO) test -race -count=1 ./...

test-compat:
	cd tests && $(GO) test -race -count=1 -timeout 15m ./...

# The policy sandbox's latency-isolation tests, without -race and alone:
# under -race beside the parallel suite they measure the machine, not the
# sandbox (tests/policy skips them there).
test-isolation:
	cd tests && $(GO) test -count=1 -timeout 5m -run 'Isolation$$' ./policy

# Kubernetes' storage layer (k8s.io/apiserver's etcd3 store, its generic
# storage suite and the watch cache) against the metastore binary, which is
# built with -race; tests/k8s is its own module (see its go.mod). The test
# binary itself is not built with -race: the code under test is the
# server's, and its thousand Kubernetes packages compile once, shared with
# go vet.
test-k8s:
	cd tests/k8s && $(GO) test -count=1 -timeout 10m ./...

# A kube-apiserver-like workload against metastore (not part of make test):
# SOAK_DURATION of writes, watches on every resource prefix, paged lists,
# the apiserver's compactor every SOAK_COMPACT and event leases, then every
# watcher's view checked. The server is built without -race for throughput.
SOAK_DURATION ?= 2m
SOAK_COMPACT ?= 10s
soak-k8s:
	cd tests/k8s && METASTORE_K8S_SOAK=1 METASTORE_K8S_SOAK_DURATION=$(SOAK_DURATION) \
		METASTORE_K8S_SOAK_COMPACT=$(SOAK_COMPACT) METASTORE_K8S_SERVER_RACE=0 \
		$(GO) test -count=1 -timeout 3h -v -run TestSoakKubeWorkload .

# KV.RangeStream with etcd 3.7's client, differential against an embedded
# etcd 3.7 (its own module: etcd 3.7's API cannot share a build with 3.6's).
test-rangestream:
	cd tests/rangestream && $(GO) test -race -count=1 -timeout 10m ./...

# The memory check streaming 200,000 keys of 2,500 bytes (500 MB), with a
# unary Range of the same list logged for comparison.
test-rangestream-large:
	cd tests/rangestream && METASTORE_RANGESTREAM_KEYS=200000 METASTORE_RANGESTREAM_CONTRAST=1 \
		$(GO) test -count=1 -timeout 15m -run TestRangeStreamMemory -v ./...

# Snapshots of real etcd 3.4 and 3.5 servers restored into metastore
# (tests/migrate TestMigrateFromEtcd34/35). Not part of make test (nor of
# make vet): the two releases are built from their own modules
# (tests/tools/etcd34, etcd35), about 2 CPU-minutes from a cold build cache;
# warm, the tests take ~45 s.
test-migrate-old:
	cd tests/tools/etcd34 && $(GO) vet ./...
	cd tests/tools/etcd35 && $(GO) vet ./...
	cd tests && METASTORE_MIGRATE_RELEASES=1 $(GO) test -race -count=1 -timeout 15m -run 'TestMigrateFromEtcd3' -v ./migrate

# etcd's own e2e suite (go.etcd.io/etcd/tests/v3 tests/common through its
# e2e framework), once against etcd's binaries and once against metastore
# installed as etcd, then a side-by-side summary (tests/README.md; not part
# of make test). UPSTREAM_RUN=<pattern> runs only the matching cases.
test-upstream:
	./scripts/test-upstream.sh

# A local 3-member metastore cluster in the foreground, laid out as etcd's
# Procfile: clients on 127.0.0.1:2379, :22379, :32379, peers on :2380,
# :22380, :32380, data in ./default.cluster (CLUSTER_FRESH=1 starts anew,
# CLUSTER_KIND=etcd runs etcd instead). Ctrl-C stops all three.
cluster: build
	./scripts/cluster.sh

# Long forms of tests/cluster (etcd, then metastore): 100 leader SIGKILLs
# of a 3-member cluster under 16 writers, 20 double kills (leader and a
# follower) of a 5-member one, then porcupine and the watch checkers over
# 40 segments, each ending with a leader SIGKILL, all with the Raft log
# truncated (--snapshot-count CLUSTER_SNAPSHOT_COUNT, a tail of half that)
# so members killed under the failover writers come back by snapshots;
# then the snapshot tests, 10 rounds each and a new member on 100,000 keys. CLUSTER_KILLS sets the 3-member leader kills.
CLUSTER_KILLS ?= 100
CLUSTER_SNAPSHOT_COUNT ?= 100
soak-cluster:
	cd tests && METASTORE_SOAK=1 METASTORE_CLUSTER_KILLS=$(CLUSTER_KILLS) METASTORE_CLUSTER_SNAPSHOT_COUNT=$(CLUSTER_SNAPSHOT_COUNT) \
		$(GO) test -race -count=1 -timeout 3h -v -run 'TestFailover|TestLinearizableLeaderKills|TestSnapshot' ./cluster

# make bench's workloads against a 3-member etcd and a 3-member metastore
# (docs/benchmarks-cluster.md).
bench-cluster: build tools
	./scripts/bench-cluster.sh

# Long forms of the reliability tests (tests/reliability, tests/e2e): 100
# SIGKILL/restart cycles and longer linearizability runs.
soak:
	cd tests && METASTORE_SOAK=1 $(GO) test -race -count=1 -timeout 3h -v -run 'Linearizable|Crash|SlowWatchers|BadClients' ./reliability ./e2e

# Every fuzz target for FUZZTIME each (go test -fuzz takes one target at a
# time). New corpus entries land in the Go build cache; the committed seed
# corpora are in each package's testdata/fuzz.
FUZZTIME ?= 1m
FUZZ_TARGETS := ./mvcc:FuzzKeyEncoding ./server/v3rpc:FuzzTxnValidation ./server/v3rpc:FuzzRequestValidation \
	./server/config:FuzzLoad ./auth:FuzzDecodeUser ./auth:FuzzPermCheck \
	./wasmhost:FuzzDecodeRequest ./wasmhost/internal/wasmbin:FuzzParseAndMeter \
	./policies/policy:FuzzDecodeTxn ./policies/policy:FuzzRequest \
	./auth/wasmpolicy:FuzzCheckMutation
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "== $$name ($$pkg) for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

# 50,000 leases kept alive from one client (etcd-io/etcd #11886 reports
# failures at 40–60k). Not under -race, so it takes about half a minute;
# make test runs the same test with 5,000 leases.
test-lease-scale:
	cd tests && METASTORE_LEASE_SCALE=50000 $(GO) test -count=1 -timeout 15m -run 'TestLeaseKeepAliveMany' -v ./compat

vet:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd tests && $(GO) vet ./...
	cd tests/k8s && $(GO) vet ./...

	cd tests/rangestream && $(GO) vet ./...
	cd tests/upstream && $(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

# Example policies (Go SDK, wasip1 reactors) into testdata/policies/, and the
# hostile fixtures (builder-made and the Go one) into testdata/hostile/.
POLICIES := tenantisolation freeze valuerules stampowner
WASMBUILD := GOOS=wasip1 GOARCH=wasm $(GO) build -buildmode=c-shared -trimpath -ldflags=-s
policies:
	@mkdir -p testdata/policies testdata/hostile
	@for p in $(POLICIES); do echo "testdata/policies/$$p.wasm"; $(WASMBUILD) -o testdata/policies/$$p.wasm ./policies/$$p || exit 1; done
	$(WASMBUILD) -o testdata/hostile/gohostile.wasm ./testdata/hostile/gohostile
	$(GO) run ./wasmhost/wasmtest/genfixtures testdata/hostile
	@cd testdata && sha256sum policies/*.wasm > policies/SHA256SUMS

bench: build tools
	./scripts/bench.sh

# etcd and metastore side by side with auth enabled (docs/benchmarks-auth.md).
bench-auth: build tools
	./scripts/bench-auth.sh

# The cost of a wasm policy in the chain end to end (docs/benchmarks-wasm.md).
bench-policy: build tools
	./scripts/bench-policy.sh

# Watch benchmarks, etcd and metastore side by side (docs/benchmarks-watch.md).
bench-watch: build tools
	./scripts/bench-watch.sh

# Lease keep-alive throughput (etcd's lease-keepalive workload) and memory
# with 50,000 live leases, etcd and metastore side by side.
bench-lease: build tools
	./scripts/bench-lease.sh

# 1M keys: memory after the load, stop, restart and crash-restart times,
# etcd and metastore side by side (docs/benchmarks-memory.md).
bench-restart: build tools
	./scripts/bench-restart.sh

clean:
	rm -rf $(BIN)
