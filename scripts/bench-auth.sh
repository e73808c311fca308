#!/usr/bin/env bash
# bench-auth.sh — etcd and metastore side by side, both with auth enabled:
# put and range with 100 clients through etcd's benchmark tool as a
# non-root user (--user bench:bench, whose role holds 101 permissions), and
# Authenticate throughput. Prints a table; record it in
# docs/benchmarks-auth.md.
#
# Usage: scripts/bench-auth.sh        (normally via `make bench-auth`)
#
# Environment:
#   BENCH_SCALE        multiplies every --total (default 1; 0.1 for a quick run)
#   BENCH_RESULTS      results directory (default bench-results/auth-<UTC timestamp>)
#   BENCH_TIMEOUT      seconds one run may take before it is killed (default 600)
#   BCRYPT_COST        --bcrypt-cost of both servers (default 10, etcd's default)
#   AUTH_SECONDS       how long the Authenticate run lasts (default 10)
#   AUTH_CLIENTS       concurrent Authenticate clients (default 8)
#   ETCD_EXTRA_ARGS / METASTORE_EXTRA_ARGS   extra flags (e.g. --auth-token=jwt,...)
#   METASTORE_BIN      the metastore binary (default bin/metastore, built if missing)
set -euo pipefail

LOG_TAG=bench-auth
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCH_SCALE=${BENCH_SCALE:-1}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-600}
BCRYPT_COST=${BCRYPT_COST:-10}
AUTH_SECONDS=${AUTH_SECONDS:-10}
AUTH_CLIENTS=${AUTH_CLIENTS:-8}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=${BENCH_RESULTS:-$ROOT/bench-results/auth-$STAMP}

build_tools authbench
build_metastore
make_work bench-auth

mkdir -p "$RESULTS"
log "results: $RESULTS"
{
	env_lines
	echo "bench_scale: $BENCH_SCALE bcrypt_cost: $BCRYPT_COST"
	"$BIN/etcd" --version 2>&1 || true
} >"$RESULTS/env.txt"

QUOTA=$((8 * 1024 * 1024 * 1024))
declare -A EP=() PID=()
TARGETS=(etcd metastore)

# shellcheck disable=SC2086
launch_etcd bench-etcd "$WORK/etcd" "$RESULTS/etcd.log" \
	--quota-backend-bytes "$QUOTA" --log-level warn --bcrypt-cost "$BCRYPT_COST" ${ETCD_EXTRA_ARGS:-}
PIDS+=("$LAUNCHED_PID")
wait_healthy etcd "$LAUNCHED_PID" "$LAUNCHED_EP" || die "etcd did not start (log: $RESULTS/etcd.log)"
EP[etcd]=$LAUNCHED_EP
PID[etcd]=$LAUNCHED_PID

# shellcheck disable=SC2086
launch_metastore bench-metastore "$WORK/metastore" "$RESULTS/metastore.log" \
	--quota-backend-bytes "$QUOTA" --log-level warn --bcrypt-cost "$BCRYPT_COST" ${METASTORE_EXTRA_ARGS:-}
PIDS+=("$LAUNCHED_PID")
wait_healthy metastore "$LAUNCHED_PID" "$LAUNCHED_EP" || die "metastore did not start (log: $RESULTS/metastore.log)"
EP[metastore]=$LAUNCHED_EP
PID[metastore]=$LAUNCHED_PID

RANGE_KEY=bench-range-key
VAL256=$(head -c 256 /dev/zero | tr '\0' 'v')
for t in "${TARGETS[@]}"; do
	"$BIN/etcdctl" --endpoints="${EP[$t]}" put "$RANGE_KEY" "$VAL256" >/dev/null || die "put on $t"
	"$BIN/authbench" setup --endpoint "${EP[$t]}" >>"$RESULTS/setup.$t.txt" 2>&1 || die "auth setup on $t (see $RESULTS/setup.$t.txt)"
done
log "auth enabled on both; benchmarks run as user bench"

N_PUT=$(scaled 300000)
N_RANGE=$(scaled 500000)
U="--user bench:bench"
WORKLOADS=(
	"put-100c|put as bench, 100 clients / 10 conns, 8 B keys, 256 B values|$U --conns 10 --clients 100 put --total $N_PUT --key-size 8 --val-size 256 --sequential-keys --key-space-size $N_PUT"
	"range-l-100c|range one key as bench, linearizable, 100 clients / 10 conns|$U --conns 10 --clients 100 range $RANGE_KEY --consistency l --total $N_RANGE"
	"range-s-100c|range one key as bench, serializable, 100 clients / 10 conns|$U --conns 10 --clients 100 range $RANGE_KEY --consistency s --total $N_RANGE"
)

declare -A RPS=() P99=() ERRS=() CPU=()
parse() { # key file
	RPS[$1]=$(bench_rps "$2")
	P99[$1]=$(bench_p99 "$2")
	ERRS[$1]=$(bench_errors "$2")
	[[ -n ${RPS[$1]} ]] || RPS[$1]=failed
}

for w in "${WORKLOADS[@]}"; do
	IFS='|' read -r name _ args <<<"$w"
	for t in "${TARGETS[@]}"; do
		out="$RESULTS/$name.$t.txt"
		log "$name → $t"
		c0=$(cpu_ticks "${PID[$t]}")
		# shellcheck disable=SC2086
		run_child timeout "$BENCH_TIMEOUT" "$BIN/benchmark" --endpoints="${EP[$t]}" --precise $args >"$out" 2>"$RESULTS/$name.$t.stderr" ||
			log "  benchmark exited with $?"
		parse "$name.$t" "$out"
		# shellcheck disable=SC2086
		CPU[$name.$t]=$(cpu_us_per_req "$c0" "$(cpu_ticks "${PID[$t]}")" "$(total_of $args)")
		log "  $t: ${RPS[$name.$t]} req/s, p99 ${P99[$name.$t]:-?} ms, server CPU ${CPU[$name.$t]} µs/req, errors ${ERRS[$name.$t]}"
	done
done
for t in "${TARGETS[@]}"; do
	out="$RESULTS/authenticate.$t.txt"
	log "authenticate → $t ($AUTH_CLIENTS clients, ${AUTH_SECONDS}s)"
	"$BIN/authbench" authenticate --endpoint "${EP[$t]}" --clients "$AUTH_CLIENTS" --duration "${AUTH_SECONDS}s" >"$out" 2>&1 || true
	parse "authenticate.$t" "$out"
	log "  $t: ${RPS[authenticate.$t]} req/s"
done

{
	echo "| workload | etcd req/s | metastore req/s | ratio (metastore/etcd) | etcd p99 | metastore p99 | etcd CPU µs/req | metastore CPU µs/req |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|"
	for name in put-100c range-l-100c range-s-100c authenticate; do
		e=${RPS[$name.etcd]} m=${RPS[$name.metastore]}
		ratio=$(awk -v e="$e" -v m="$m" 'BEGIN { if (e+0 > 0 && m ~ /^[0-9.]+$/) printf "%.2f", m / e; else print "-" }')
		note=""
		for t in "${TARGETS[@]}"; do [[ ${ERRS[$name.$t]:-0} == 0 ]] || note+=" ($t: ${ERRS[$name.$t]} errors)"; done
		echo "| $name$note | $e | $m | $ratio | ${P99[$name.etcd]:--} ms | ${P99[$name.metastore]:--} ms | ${CPU[$name.etcd]:--} | ${CPU[$name.metastore]:--} |"
	done
	echo
	echo "BENCH_SCALE=$BENCH_SCALE, bcrypt cost $BCRYPT_COST; user bench holds READWRITE on every key plus 100 READ prefixes."
	for w in "${WORKLOADS[@]}"; do
		IFS='|' read -r name desc args <<<"$w"
		echo "- $name: $desc — \`benchmark --endpoints=<ep> --precise $args\`"
	done
	echo "- authenticate: Authenticate(bench) from $AUTH_CLIENTS concurrent clients for ${AUTH_SECONDS}s — \`authbench authenticate\`"
} >"$RESULTS/table.md"
echo
cat "$RESULTS/table.md"
echo "Raw outputs, server logs and environment: $RESULTS"
