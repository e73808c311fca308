#!/usr/bin/env bash
# bench-lease.sh — lease benchmarks, etcd and metastore side by side:
#   1. etcd's benchmark tool, `lease-keepalive` workload (each request a
#      KeepAliveOnce: a new keep-alive stream, one renewal), 1 client and
#      100 clients;
#   2. memory with many live leases: tests/tools/leaseload grants
#      BENCH_LEASES leases (default 50,000) from one client and keeps them
#      all alive; the server's RSS and Go heap in use are sampled before and
#      while they are held.
#
# Usage: scripts/bench-lease.sh            (normally via `make bench-lease`)
#
# Environment:
#   BENCH_SCALE     multiplies every --total (default 1; e.g. 0.1 for a quick run)
#   BENCH_ROUNDS    runs of each keep-alive workload per server, alternating
#                   which server goes first; medians reported (default 3)
#   BENCH_LEASES    leases held for the memory measurement (default 50000)
#   BENCH_RESULTS   results directory (default bench-results/lease-<UTC timestamp>)
#   BENCH_TIMEOUT   seconds one benchmark run may take before it is killed (default 600)
#   METASTORE_BIN   the metastore binary to measure (default bin/metastore)
#
# Both servers run on 127.0.0.1 on free ports with temporary data
# directories, removed on exit. Tools are built into bin/ when missing.
set -euo pipefail

LOG_TAG=bench-lease
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCH_SCALE=${BENCH_SCALE:-1}
BENCH_LEASES=${BENCH_LEASES:-50000}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
[[ $BENCH_ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_ROUNDS must be a positive integer" >&2; exit 2; }
BENCH_TIMEOUT=${BENCH_TIMEOUT:-600}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=${BENCH_RESULTS:-$ROOT/bench-results/lease-$STAMP}

build_tools leaseload
build_metastore
make_work bench-lease

mkdir -p "$RESULTS"
log "results: $RESULTS"
{
	env_lines
	echo "bench_scale: $BENCH_SCALE"
	echo "bench_leases: $BENCH_LEASES"
	echo "bench_rounds: $BENCH_ROUNDS"
	echo "--- etcd --version"
	"$BIN/etcd" --version 2>&1 || true
} >"$RESULTS/env.txt"

declare -A EP=() PID=()
TARGETS=(etcd metastore)

# start target: starts etcd or metastore; sets PID[target] and EP[target].
start() {
	local t=$1
	if [[ $t == etcd ]]; then
		launch_etcd bench-etcd "$WORK/etcd" "$RESULTS/etcd.log" --log-level warn
	else
		launch_metastore bench-metastore "$WORK/metastore" "$RESULTS/metastore.log" --log-level warn
	fi
	PID[$t]=$LAUNCHED_PID
	PIDS+=("$LAUNCHED_PID")
	EP[$t]=$LAUNCHED_EP
	wait_healthy "$t" "${PID[$t]}" "${EP[$t]}" || die "$t did not start (log: $RESULTS/$t.log)"
	log "$t healthy on ${EP[$t]} (pid ${PID[$t]})"
}

start etcd
start metastore

# ------------------------------------------------------ keep-alive load ---

N1=$(scaled 100000)
N100=$(scaled 300000)
WORKLOADS=(
	"lease-keepalive-1c|KeepAliveOnce, 1 client / 1 conn, $N1 requests|--conns 1 --clients 1 lease-keepalive --total $N1"
	"lease-keepalive-100c|KeepAliveOnce, 100 clients / 10 conns, $N100 requests|--conns 10 --clients 100 lease-keepalive --total $N100"
)

declare -A RPS=() P99=() ERRS=() CPU=() CCPU=()
run_one() { # target name round args...
	local t=$1 name=$2 r=$3 rc=0
	shift 3
	local out="$RESULTS/$name.$t.r$r.txt" k=$name.$t.$r
	echo "# $BIN/benchmark --endpoints=${EP[$t]} --precise $*" >"$out"
	log "$name → $t (round $r/$BENCH_ROUNDS): benchmark $*"
	local c0 cc0
	c0=$(cpu_ticks "${PID[$t]}")
	children_cpu
	cc0=$CHILDREN_CPU_US
	run_child timeout "$BENCH_TIMEOUT" "$BIN/benchmark" --endpoints="${EP[$t]}" --precise "$@" >>"$out" 2>"$RESULTS/$name.$t.r$r.stderr" || rc=$?
	((rc == 0)) || log "  benchmark exited with status $rc (see $out)"
	CPU[$k]=$(cpu_us_per_req "$c0" "$(cpu_ticks "${PID[$t]}")" "$(total_of "$@")")
	children_cpu
	CCPU[$k]=$(awk -v a="$cc0" -v b="$CHILDREN_CPU_US" -v n="$(total_of "$@")" 'BEGIN { if (n > 0) printf "%.1f", (b - a) / n }')
	RPS[$k]=$(bench_rps "$out")
	P99[$k]=$(bench_p99 "$out")
	ERRS[$k]=$(bench_errors "$out")
	log "  $t: ${RPS[$k]:-no result} req/s, p99 ${P99[$k]:-?} ms, server CPU ${CPU[$k]} µs/req, client CPU ${CCPU[$k]:-?} µs/req, errors ${ERRS[$k]}"
}

for ((r = 1; r <= BENCH_ROUNDS; r++)); do
	order=(etcd metastore)
	((r % 2 == 1)) || order=(metastore etcd) # neither always runs second
	for w in "${WORKLOADS[@]}"; do
		IFS='|' read -r name _ args <<<"$w"
		for t in "${order[@]}"; do
			# shellcheck disable=SC2086
			run_one "$t" "$name" "$r" $args
		done
	done
done

{
	printf 'workload\tserver\tround\treq_per_s\tp99_ms\tserver_cpu_us_per_req\terrors\tclient_cpu_us_per_req\n'
	for w in "${WORKLOADS[@]}"; do
		IFS='|' read -r name _ _ <<<"$w"
		for t in "${TARGETS[@]}"; do
			for ((r = 1; r <= BENCH_ROUNDS; r++)); do
				k=$name.$t.$r
				printf '%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n' "$name" "$t" "$r" "${RPS[$k]:-}" "${P99[$k]:-}" "${CPU[$k]:-}" "${ERRS[$k]:-}" "${CCPU[$k]:-}"
			done
		done
	done
} >"$RESULTS/runs.tsv"

for w in "${WORKLOADS[@]}"; do
	IFS='|' read -r name _ _ <<<"$w"
	for t in "${TARGETS[@]}"; do
		rs=() ps=() cs=() ccs=() errs=0
		for ((r = 1; r <= BENCH_ROUNDS; r++)); do
			k=$name.$t.$r
			[[ -n ${CPU[$k]} ]] && cs+=("${CPU[$k]}")
			[[ -n ${CCPU[$k]} ]] && ccs+=("${CCPU[$k]}")
			[[ -n ${RPS[$k]} ]] && rs+=("${RPS[$k]}")
			[[ -n ${P99[$k]} ]] && ps+=("${P99[$k]}")
			errs=$((errs + ${ERRS[$k]:-0}))
		done
		RPS[$name.$t]=$(MEDIAN_FMT=%.0f median "${rs[@]}")
		P99[$name.$t]=$(MEDIAN_FMT=%.2f median "${ps[@]}")
		CPU[$name.$t]=$(MEDIAN_FMT=%.1f median "${cs[@]}")
		CCPU[$name.$t]=$(MEDIAN_FMT=%.1f median "${ccs[@]}")
		[[ -n ${RPS[$name.$t]} ]] || RPS[$name.$t]=failed
		ERRS[$name.$t]=$errs
	done
done

# --------------------------------------------------------------- memory ---

# rss_kb pid; heap_inuse endpoint (bytes, from the Go runtime's metrics)
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
heap_inuse() {
	curl -s "http://$1/metrics" | awk '/^go_memstats_heap_inuse_bytes / {printf "%.0f", $2}'
}
# min_heap endpoint: the smallest of 5 samples 2s apart, the closest to the
# live heap a scrape can see (garbage between collections inflates the rest)
min_heap() {
	local m="" h
	for _ in 1 2 3 4 5; do
		h=$(heap_inuse "$1")
		if [[ -z $m ]] || ((h < m)); then m=$h; fi
		sleep 2
	done
	echo "$m"
}

declare -A RSS0=() RSS1=() HEAP0=() HEAP1=() GRANT=() HELD=()
for t in "${TARGETS[@]}"; do
	log "memory → $t: $BENCH_LEASES leases kept alive by one client"
	HEAP0[$t]=$(min_heap "${EP[$t]}")
	RSS0[$t]=$(rss_kb "${PID[$t]}")
	out="$RESULTS/memory.$t.txt"
	"$BIN/leaseload" --endpoints "${EP[$t]}" --leases "$BENCH_LEASES" --ttl 30 --hold 25s >"$out" 2>&1 &
	CHILD=$!
	while ! grep -q '^ready' "$out" 2>/dev/null; do
		kill -0 "$CHILD" 2>/dev/null || break
		sleep 0.5
	done
	sleep 5 # let renewals settle into their steady state
	HEAP1[$t]=$(min_heap "${EP[$t]}")
	RSS1[$t]=$(rss_kb "${PID[$t]}")
	rc=0
	wait "$CHILD" || rc=$?
	CHILD=
	GRANT[$t]=$(awk '/^granted/ {print $5}' "$out")
	if ((rc == 0)); then HELD[$t]=all; else HELD[$t]="LOST LEASES (see $out)"; fi
	log "  $t: RSS ${RSS0[$t]} → ${RSS1[$t]} kB, heap in use ${HEAP0[$t]} → ${HEAP1[$t]} B, granted in ${GRANT[$t]}, held: ${HELD[$t]}"
done

# ------------------------------------------------------------------ table ---

{
	echo "| workload | etcd req/s | metastore req/s | ratio (metastore/etcd) | etcd p99 | metastore p99 | etcd CPU µs/req | metastore CPU µs/req | client CPU µs/req (etcd; metastore) |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---|"
	for w in "${WORKLOADS[@]}"; do
		IFS='|' read -r name _ _ <<<"$w"
		e=${RPS[$name.etcd]} m=${RPS[$name.metastore]}
		ratio=$(awk -v e="$e" -v m="$m" 'BEGIN { if (e+0 > 0 && m ~ /^[0-9.]+$/) printf "%.2f", m / e; else print "-" }')
		note=""
		for t in "${TARGETS[@]}"; do
			[[ ${ERRS[$name.$t]:-0} == 0 ]] || note+=" ($t: ${ERRS[$name.$t]} errors)"
		done
		echo "| $name$note | $e | $m | $ratio | ${P99[$name.etcd]:-?} ms | ${P99[$name.metastore]:-?} ms | ${CPU[$name.etcd]:-?} | ${CPU[$name.metastore]:-?} | ${CCPU[$name.etcd]:-?}; ${CCPU[$name.metastore]:-?} |"
	done
	echo
	echo "Medians of $BENCH_ROUNDS rounds per server (each round alternates which server runs first)."
	echo
	echo "Memory with $BENCH_LEASES leases kept alive by one client (TTL 30s):"
	echo
	echo "| server | RSS before | RSS with leases | Go heap in use before | Go heap in use with leases | heap per lease | granted in | all kept alive |"
	echo "|---|---:|---:|---:|---:|---:|---:|---|"
	for t in "${TARGETS[@]}"; do
		awk -v t="$t" -v r0="${RSS0[$t]}" -v r1="${RSS1[$t]}" -v h0="${HEAP0[$t]}" -v h1="${HEAP1[$t]}" -v n="$BENCH_LEASES" -v g="${GRANT[$t]}" -v held="${HELD[$t]}" \
			'BEGIN { printf "| %s | %.1f MiB | %.1f MiB | %.1f MiB | %.1f MiB | %.0f B | %s | %s |\n", t, r0/1024, r1/1024, h0/1048576, h1/1048576, (h1-h0)/n, g, held }'
	done
	echo
	echo "Workloads (BENCH_SCALE=$BENCH_SCALE):"
	for w in "${WORKLOADS[@]}"; do
		IFS='|' read -r name desc args <<<"$w"
		echo "- $name: $desc — \`benchmark --endpoints=<ep> --precise $args\`"
	done
	echo "- memory: \`leaseload --endpoints=<ep> --leases $BENCH_LEASES --ttl 30 --hold 25s\`, heap = smallest of 5 samples taken 5–15s after the last grant"
	echo "  (metastore's Go heap includes a 64 MiB allocation that is never written and so not resident: the GC floor, RATIONALE.md \"A 64 MiB floor under the Go heap\"; the per-lease difference is unaffected)"
	echo
	echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$RESULTS/table.md"

echo
cat "$RESULTS/table.md"
echo "Raw outputs, server logs and environment: $RESULTS"
