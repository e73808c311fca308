#!/usr/bin/env bash
# test-upstream.sh — etcd's own e2e suite (go.etcd.io/etcd/tests/v3, its
# tests/common cases through the e2e framework) against etcd and against
# metastore, then a side-by-side summary.
#
# Usage: scripts/test-upstream.sh       (normally via `make test-upstream`)
#
# Environment:
#   UPSTREAM_PKG       etcd's test package (default common; e2e is etcd's
#                      larger ctl/e2e suite, the same framework and flags)
#   UPSTREAM_RUN       -run pattern for go test (default: every case)
#   UPSTREAM_TARGETS   servers to run against (default "etcd metastore")
#   UPSTREAM_TIMEOUT   go test -timeout per server (default 90m)
#   UPSTREAM_RESULTS   results directory (default bin/upstream/results)
#
# The suite is run with go test straight from the module cache (the tests
# module pins go.etcd.io/etcd/tests/v3), with -tags e2e, which selects its
# e2e framework, and -bin-dir pointing at a directory holding the server
# as `etcd` plus etcdctl and etcdutl. Both bin dirs get the same etcdctl and
# etcdutl, built from etcd's modules at the version the suite is from. The
# framework starts every cluster on fixed ports from 20000, so the servers
# run one after the other and the suite one case at a time (-p 1).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GO=${GO:-go}
UPSTREAM_PKG=${UPSTREAM_PKG:-common}
UPSTREAM_TARGETS=${UPSTREAM_TARGETS:-etcd metastore}
UPSTREAM_TIMEOUT=${UPSTREAM_TIMEOUT:-90m}
UPSTREAM_RESULTS=${UPSTREAM_RESULTS:-$root/bin/upstream/results}
bindir=$root/bin/upstream
mkdir -p "$bindir/etcd" "$bindir/metastore" "$UPSTREAM_RESULTS"

echo "== building etcd, etcdctl, etcdutl (tests/upstream/go.mod) and metastore"
(cd "$root/tests/upstream" &&
	$GO build -o "$bindir/etcd/etcd" go.etcd.io/etcd/server/v3 &&
	$GO build -o "$bindir/etcd/etcdctl" go.etcd.io/etcd/etcdctl/v3 &&
	$GO build -o "$bindir/etcd/etcdutl" go.etcd.io/etcd/etcdutl/v3)
(cd "$root" && $GO build -o "$bindir/metastore/etcd" ./cmd/metastore)
cp "$bindir/etcd/etcdctl" "$bindir/etcd/etcdutl" "$bindir/metastore/"

run=()
if [ -n "${UPSTREAM_RUN:-}" ]; then
	run=(-run "$UPSTREAM_RUN")
fi
for target in $UPSTREAM_TARGETS; do
	echo "== etcd's tests/$UPSTREAM_PKG against $target ($UPSTREAM_RESULTS/$target.json)"
	# A failing case is a result, not an error of this script.
	(cd "$root/tests/upstream" &&
		$GO test -tags e2e -count=1 -p 1 -timeout "$UPSTREAM_TIMEOUT" -json "${run[@]}" \
			go.etcd.io/etcd/tests/v3/$UPSTREAM_PKG -args -bin-dir="$bindir/$target") \
		>"$UPSTREAM_RESULTS/$target.json" || true
done

if [ -f "$UPSTREAM_RESULTS/etcd.json" ] && [ -f "$UPSTREAM_RESULTS/metastore.json" ]; then
	(
		echo "etcd's tests/$UPSTREAM_PKG ($(grep -o 'go.etcd.io/etcd/tests/v3 v[^ ]*' "$root/tests/upstream/go.mod")), run $(date -u +%Y-%m-%d)" \
			"on metastore $(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet HEAD -- . ':!tests/README.md' || echo ' (with local changes)')"
		echo
		cd "$root/tests/upstream" && $GO run ./e2esummary -all \
		-etcd "$UPSTREAM_RESULTS/etcd.json" -metastore "$UPSTREAM_RESULTS/metastore.json"
	) | tee "$UPSTREAM_RESULTS/summary.md"
fi
