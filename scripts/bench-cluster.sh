#!/usr/bin/env bash
# bench-cluster.sh — make bench's workloads (scripts/bench.sh, etcd's
# benchmark tool) against a 3-member etcd and a 3-member metastore on
# loopback, every member on this machine; the benchmark's connections are
# spread over the three members (writes to followers are forwarded to the
# leader, as clients of a real cluster do). Writes the table to
# docs/benchmarks-cluster.md (BENCH_DOC to write elsewhere, BENCH_DOC=- not
# at all). Every setting of bench.sh applies (BENCH_SCALE, BENCH_ROUNDS...).
#
# Usage: scripts/bench-cluster.sh      (normally via `make bench-cluster`)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
export BENCH_RESULTS=${BENCH_RESULTS:-$ROOT/bench-results/cluster-$STAMP}
DOC=${BENCH_DOC:-$ROOT/docs/benchmarks-cluster.md}

BENCH_CLUSTER=3 "$ROOT/scripts/bench.sh"

[[ $DOC == - ]] && exit 0
# Sections after this marker (measurements made by hand) survive a rerun.
MARK='<!-- kept by bench-cluster.sh: sections below are not regenerated -->'
KEPT=""
[[ -f $DOC ]] && KEPT=$(sed -n "/^$MARK\$/,\$p" "$DOC")
{
	cat <<'HEAD'
# Benchmarks: 3-member clusters

`make bench-cluster` (scripts/bench-cluster.sh): the workloads of `make
bench` (etcd's own benchmark tool, built from its Go module) against a
3-member etcd 3.6 and a 3-member metastore, each member a process on this
machine with etcd's clustering flags on loopback, default heartbeat and
election timeout, fsync on. The benchmark's connections go to the three
members in turn, so two thirds of the writes reach a follower and are
forwarded to the leader. Server CPU is the sum over the three members.
Every member shares the machine's cores with the others and with the load
generator: the numbers compare the two servers on the same footing, they
are not what three machines would give.

Targets (issue 15): metastore ≥ 1.5× etcd on put-100c and txn-put-100c, ≥ 2×
on the linearizable range, p99 no worse.

HEAD
	cat "$BENCH_RESULTS/table.md"
	echo
	echo "Environment (\`$BENCH_RESULTS/env.txt\`):"
	echo
	echo '```'
	grep -E '^(date_utc|host|cpus|cpu_model|mem|go|git|bench_scale|bench_rounds|loadavg)' "$BENCH_RESULTS/env.txt" || true
	echo '```'
	[[ -z $KEPT ]] || printf '\n%s\n' "$KEPT"
} >"$DOC"
echo "wrote $DOC"
