#!/usr/bin/env bash
# pgo-profile.sh — collect CPU profiles of a single-member metastore under
# make bench's workloads and lease keep-alives (etcd's benchmark tool), and
# merge them into one profile for profile-guided optimisation, which
# scripts/pgo-compare.sh measures (RATIONALE.md "PGO with the lean
# transport, measured again: not kept"). The profile goes to bin/, not to
# cmd/metastore/default.pgo, where every build would pick it up: copy it
# there only once it has been measured to pay.
#
# Usage: scripts/pgo-profile.sh
#
# Environment:
#   PGO_SECONDS   CPU profile length per workload (default 12)
#   PGO_OUT       where the merged profile goes (default bin/default.pgo)
#   PGO_KEEP      a directory to keep the per-workload profiles in (default: removed)
#
# The server profiled is built with -pgo=off, so a new profile does not
# depend on the old one. Each workload runs once against a fresh-started
# server with --enable-pprof; its profile covers the whole run (the totals
# are sized to finish within PGO_SECONDS on a 2-core machine; a run that
# ends early adds only idle time, which has no samples).
set -euo pipefail

LOG_TAG=pgo
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PGO_SECONDS=${PGO_SECONDS:-12}
PGO_OUT=${PGO_OUT:-$BIN/default.pgo}
[[ $PGO_SECONDS =~ ^[1-9][0-9]*$ ]] || die "PGO_SECONDS must be a positive integer"

build_tools
make_work pgo
mkdir -p "$(dirname "$PGO_OUT")"
METASTORE_BIN=$WORK/metastore.nopgo
log "building $METASTORE_BIN with -pgo=off"
(cd "$ROOT" && "$GO" build -pgo=off -o "$METASTORE_BIN" ./cmd/metastore)
PROFILES=${PGO_KEEP:-$WORK/profiles}
mkdir -p "$PROFILES"

# name|benchmark arguments: make bench's five workloads and bench-lease's
# 100-client keep-alive, each ~8 s at 2 cores.
WORKLOADS=(
	"put-1c|--conns 1 --clients 1 put --total 15000 --key-size 8 --val-size 256 --sequential-keys --key-space-size 15000"
	"put-100c|--conns 10 --clients 100 put --total 150000 --key-size 8 --val-size 256 --sequential-keys --key-space-size 150000"
	"range-l-100c|--conns 10 --clients 100 range bench-range-key --consistency l --total 250000"
	"range-s-100c|--conns 10 --clients 100 range bench-range-key --consistency s --total 250000"
	"txn-put-100c|--conns 10 --clients 100 txn-put --total 150000 --txn-ops 1 --key-size 8 --val-size 256 --key-space-size 150000"
	"lease-keepalive-100c|--conns 10 --clients 100 lease-keepalive --total 150000"
)

VAL256=$(head -c 256 /dev/zero | tr '\0' 'v')
for w in "${WORKLOADS[@]}"; do
	IFS='|' read -r name args <<<"$w"
	launch_metastore pgo-metastore "$WORK/data-$name" "$WORK/metastore.log" --enable-pprof
	pid=$LAUNCHED_PID ep=$LAUNCHED_EP
	PIDS+=("$pid")
	wait_healthy metastore "$pid" "$ep" 30 || die "metastore did not start (log: $WORK/metastore.log)"
	"$BIN/etcdctl" --endpoints="$ep" put bench-range-key "$VAL256" >/dev/null
	log "$name: profiling ${PGO_SECONDS}s while: benchmark $args"
	curl -sf -o "$PROFILES/$name.pprof" "http://$ep/debug/pprof/profile?seconds=$PGO_SECONDS" &
	prof=$!
	sleep 0.2
	# shellcheck disable=SC2086
	run_child "$BIN/benchmark" --endpoints="$ep" $args >"$PROFILES/$name.bench.txt" 2>&1 ||
		log "  benchmark exited with an error (see $PROFILES/$name.bench.txt)"
	wait "$prof" || die "fetching the profile of $name failed"
	stop_pid "$pid"
	PIDS=()
done

"$GO" tool pprof -proto "$PROFILES"/*.pprof >"$PGO_OUT.tmp"
mv "$PGO_OUT.tmp" "$PGO_OUT"
log "wrote $PGO_OUT ($(wc -c <"$PGO_OUT") bytes) from: $(cd "$PROFILES" && echo *.pprof)"
