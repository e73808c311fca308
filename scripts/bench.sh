#!/usr/bin/env bash
# bench.sh — run etcd's own benchmark tool with the same workloads against a
# reference etcd server and against metastore, and print a comparison table.
#
# Usage: scripts/bench.sh            (normally via `make bench`)
#
# Environment:
#   BENCH_SCALE     multiplies every --total (default 1; e.g. 0.1 for a quick run)
#   BENCH_TARGETS   which servers to measure (default "etcd metastore")
#   BENCH_RESULTS   results directory (default bench-results/<UTC timestamp>)
#   BENCH_ROUNDS    run every workload this many times per server, alternating
#                   which server goes first, and report medians (default 1)
#   BENCH_TIMEOUT   seconds one benchmark run may take before it is killed (default 600)
#   ETCD_EXTRA_ARGS / METASTORE_EXTRA_ARGS   extra flags for the servers
#   METASTORE_BIN   the metastore binary to measure (default bin/metastore)
#
# Both servers run on 127.0.0.1 only, on free ports, each with its own
# temporary data directory; everything is stopped and removed on exit. The
# benchmark tool, etcd and etcdctl are built from their Go modules (tests/) if
# bin/ does not have them yet. If bin/metastore is missing or does not become
# healthy, the metastore column is skipped with a message and etcd is still
# measured.
set -euo pipefail

LOG_TAG=bench
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCH_SCALE=${BENCH_SCALE:-1}
BENCH_TARGETS=${BENCH_TARGETS:-etcd metastore}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-600}
BENCH_ROUNDS=${BENCH_ROUNDS:-1}
[[ $BENCH_ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_ROUNDS must be a positive integer" >&2; exit 2; }
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=${BENCH_RESULTS:-$ROOT/bench-results/$STAMP}

build_tools
make_work bench

mkdir -p "$RESULTS"
log "results: $RESULTS"

# ------------------------------------------------------ environment info ---
{
	env_lines
	echo "tmp_fs: $(df -PT "$WORK" | awk 'NR==2 {print $2" on "$1}')"
	# bin/metastore is built from the work tree, which may differ from HEAD
	echo "git_uncommitted_files: $(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l)"
	echo "metastore_bin_mtime: $(date -u -r "$METASTORE_BIN" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || echo missing)"
	echo "bench_scale: $BENCH_SCALE"
	echo "bench_rounds: $BENCH_ROUNDS"
	echo "--- etcd --version"
	"$BIN/etcd" --version 2>&1 || true
	if [[ -x "$METASTORE_BIN" ]]; then
		echo "--- metastore version"
		timeout 10 "$METASTORE_BIN" version 2>&1 || true
	fi
} >"$RESULTS/env.txt"

# ---------------------------------------------------------------- servers ---

QUOTA=$((8 * 1024 * 1024 * 1024)) # 8 GiB: no NOSPACE alarm during a run
declare -A EP=() PID=()
TARGETS=()

start_etcd() {
	# shellcheck disable=SC2086
	launch_etcd bench-etcd "$WORK/etcd" "$RESULTS/etcd.log" \
		--quota-backend-bytes "$QUOTA" --log-level warn ${ETCD_EXTRA_ARGS:-}
	PIDS+=("$LAUNCHED_PID")
	if wait_healthy etcd "$LAUNCHED_PID" "$LAUNCHED_EP" 30; then
		EP[etcd]=$LAUNCHED_EP
		PID[etcd]=$LAUNCHED_PID
		TARGETS+=(etcd)
		log "etcd healthy on $LAUNCHED_EP (pid $LAUNCHED_PID)"
	else
		die "the reference etcd did not start; see $RESULTS/etcd.log"
	fi
}

start_metastore() {
	if [[ ! -x "$METASTORE_BIN" ]]; then
		log "building $METASTORE_BIN"
		if ! (cd "$ROOT" && "$GO" build -o "$METASTORE_BIN" ./cmd/metastore) >"$RESULTS/metastore-build.log" 2>&1; then
			log "SKIPPING metastore: it does not build yet (see $RESULTS/metastore-build.log)"
			return 0
		fi
	fi
	local help
	# the same quota and log level as etcd, where this build has the flags
	local -a opt=()
	help=$(timeout 10 "$METASTORE_BIN" --help 2>&1 || true)
	if [[ $help == *--quota-backend-bytes* ]]; then
		opt+=(--quota-backend-bytes "$QUOTA")
	fi
	if [[ $help == *--log-level* ]]; then
		opt+=(--log-level warn)
	fi
	# shellcheck disable=SC2086
	launch_metastore bench-metastore "$WORK/metastore" "$RESULTS/metastore.log" \
		"${opt[@]}" ${METASTORE_EXTRA_ARGS:-}
	PIDS+=("$LAUNCHED_PID")
	if wait_healthy metastore "$LAUNCHED_PID" "$LAUNCHED_EP" 30; then
		EP[metastore]=$LAUNCHED_EP
		PID[metastore]=$LAUNCHED_PID
		TARGETS+=(metastore)
		log "metastore healthy on $LAUNCHED_EP (pid $LAUNCHED_PID)"
	else
		log "SKIPPING metastore: $METASTORE_BIN does not answer 'etcdctl endpoint health' yet (log: $RESULTS/metastore.log)"
		kill "$LAUNCHED_PID" 2>/dev/null || true
	fi
}

# make bench-cluster (BENCH_CLUSTER=3): each server as a 3-member cluster
# on loopback instead (start_etcd, start_metastore and cpu_ticks redefined).
# shellcheck source=scripts/cluster-lib.sh
[[ -z ${BENCH_CLUSTER:-} ]] || source "$ROOT/scripts/cluster-lib.sh"

for t in $BENCH_TARGETS; do
	case $t in
	etcd) start_etcd ;;
	metastore) start_metastore ;;
	*) die "unknown target in BENCH_TARGETS: $t" ;;
	esac
done
((${#TARGETS[@]} > 0)) || die "no server to measure"

# -------------------------------------------------------------- workloads ---

# Totals at BENCH_SCALE=1 are sized so that each run against etcd takes
# roughly 10 s on the 2-core machine in docs/benchmarks.md.
N_PUT1=$(scaled 30000)
N_PUT100=$(scaled 300000)
N_RANGE=$(scaled 500000)
N_TXN=$(scaled 300000)
RANGE_KEY=bench-range-key

# name|description|benchmark arguments (endpoints are added per target)
WORKLOADS=(
	"put-1c|put, 1 client / 1 conn, 8 B keys, 256 B values, $N_PUT1 distinct keys|--conns 1 --clients 1 put --total $N_PUT1 --key-size 8 --val-size 256 --sequential-keys --key-space-size $N_PUT1"
	"put-100c|put, 100 clients / 10 conns, 8 B keys, 256 B values, $N_PUT100 distinct keys|--conns 10 --clients 100 put --total $N_PUT100 --key-size 8 --val-size 256 --sequential-keys --key-space-size $N_PUT100"
	"range-l-100c|range one key, linearizable, 100 clients / 10 conns, $N_RANGE requests|--conns 10 --clients 100 range $RANGE_KEY --consistency l --total $N_RANGE"
	"range-s-100c|range one key, serializable, 100 clients / 10 conns, $N_RANGE requests|--conns 10 --clients 100 range $RANGE_KEY --consistency s --total $N_RANGE"
	"txn-put-100c|txn with 1 put, 100 clients / 10 conns, 8 B keys, 256 B values, $N_TXN txns|--conns 10 --clients 100 txn-put --total $N_TXN --txn-ops 1 --key-size 8 --val-size 256 --key-space-size $N_TXN"
)

# the key the range workloads read, 256 B value, written before any run
VAL256=$(head -c 256 /dev/zero | tr '\0' 'v')
for t in "${TARGETS[@]}"; do
	"$BIN/etcdctl" --endpoints="${EP[$t]}" put "$RANGE_KEY" "$VAL256" >/dev/null \
		|| die "could not write $RANGE_KEY to $t"
done

declare -A RPS=() P99=() ERRS=() FAILED=() CPU=() CCPU=()

# run_one target name round args...
run_one() {
	local t=$1 name=$2 r=$3
	shift 3
	local out="$RESULTS/$name.$t.r$r.txt"
	echo "# $BIN/benchmark --endpoints=${EP[$t]} --precise $*" >"$out"
	log "$name → $t (round $r/$BENCH_ROUNDS): benchmark $*"
	local rc=0 c0 cc0
	c0=$(cpu_ticks "${PID[$t]}")
	children_cpu
	cc0=$CHILDREN_CPU_US
	# --precise: full float precision, so sub-millisecond p99s are not rounded
	run_child timeout "$BENCH_TIMEOUT" "$BIN/benchmark" --endpoints="${EP[$t]}" --precise "$@" \
		>>"$out" 2>"$RESULTS/$name.$t.r$r.stderr" || rc=$?
	if ((rc != 0)); then
		log "  benchmark exited with status $rc (see $out)"
	fi
	local k=$name.$t.$r
	CPU[$k]=$(cpu_us_per_req "$c0" "$(cpu_ticks "${PID[$t]}")" "$(total_of "$@")")
	children_cpu
	CCPU[$k]=$(awk -v a="$cc0" -v b="$CHILDREN_CPU_US" -v n="$(total_of "$@")" 'BEGIN { if (n > 0) printf "%.1f", (b - a) / n }')
	RPS[$k]=$(bench_rps "$out")
	P99[$k]=$(bench_p99 "$out")
	ERRS[$k]=$(bench_errors "$out")
	log "  $t: ${RPS[$k]:-no result} req/s, p99 ${P99[$k]:-?} ms, server CPU ${CPU[$k]:-?} µs/req, client CPU ${CCPU[$k]:-?} µs/req, errors ${ERRS[$k]}"
}

for ((r = 1; r <= BENCH_ROUNDS; r++)); do
	# alternate which server goes first, so neither always runs second
	order=("${TARGETS[@]}")
	if ((r % 2 == 0 && ${#order[@]} == 2)); then
		order=("${TARGETS[1]}" "${TARGETS[0]}")
	fi
	for w in "${WORKLOADS[@]}"; do
		IFS='|' read -r name _ args <<<"$w"
		for t in "${order[@]}"; do
			# shellcheck disable=SC2086
			run_one "$t" "$name" "$r" $args
		done
	done
done

echo "loadavg_at_end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RESULTS/env.txt"

# every run, one line each
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

# per workload and server: median over the rounds, errors summed
for w in "${WORKLOADS[@]}"; do
	IFS='|' read -r name _ _ <<<"$w"
	for t in "${TARGETS[@]}"; do
		rs=() ps=() cs=() ccs=() errs=0 failed=0
		for ((r = 1; r <= BENCH_ROUNDS; r++)); do
			k=$name.$t.$r
			if [[ -n ${RPS[$k]} ]]; then rs+=("${RPS[$k]}"); else failed=$((failed + 1)); fi
			[[ -n ${P99[$k]} ]] && ps+=("${P99[$k]}")
			[[ -n ${CPU[$k]} ]] && cs+=("${CPU[$k]}")
			[[ -n ${CCPU[$k]} ]] && ccs+=("${CCPU[$k]}")
			errs=$((errs + ${ERRS[$k]:-0}))
		done
		RPS[$name.$t]=$(MEDIAN_FMT=%.0f median "${rs[@]}")
		P99[$name.$t]=$(MEDIAN_FMT=%.2f median "${ps[@]}")
		CPU[$name.$t]=$(MEDIAN_FMT=%.1f median "${cs[@]}")
		CCPU[$name.$t]=$(MEDIAN_FMT=%.1f median "${ccs[@]}")
		[[ -n ${RPS[$name.$t]} ]] || RPS[$name.$t]=failed
		ERRS[$name.$t]=$errs
		FAILED[$name.$t]=$failed
	done
done

for t in "${TARGETS[@]}"; do
	{
		"$BIN/etcdctl" --endpoints="${EP[$t]}" endpoint status -w table
		# a cross-check: both servers must hold the same number of keys
		echo "keys: $("$BIN/etcdctl" --endpoints="${EP[$t]}" --command-timeout=60s get "" --prefix --count-only -w fields | awk -F' : ' '/"Count"/ {print $2}')"
	} >"$RESULTS/status.$t.txt" 2>&1 || true
	log "$t: $(tail -1 "$RESULTS/status.$t.txt")"
done

# ------------------------------------------------------------------ table ---

have() { [[ " ${TARGETS[*]} " == *" $1 "* ]]; }
cell() { # target name field
	local k=$2.$1
	if ! have "$1"; then echo "pending"; return; fi
	case $3 in
	rps) echo "${RPS[$k]}" ;;
	p99) if [[ -n ${P99[$k]} ]]; then echo "${P99[$k]} ms"; else echo "-"; fi ;;
	cpu) echo "${CPU[$k]:--}" ;;
	ccpu) echo "${CCPU[$k]:--}" ;;
	esac
}

{
	echo "| workload | etcd req/s | metastore req/s | ratio (metastore/etcd) | etcd p99 | metastore p99 | etcd CPU µs/req | metastore CPU µs/req | client CPU µs/req (etcd; metastore) |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---|"
	for w in "${WORKLOADS[@]}"; do
		IFS='|' read -r name _ _ <<<"$w"
		e=$(cell etcd "$name" rps)
		m=$(cell metastore "$name" rps)
		ratio=$(awk -v e="$e" -v m="$m" 'BEGIN { if (e+0 > 0 && m ~ /^[0-9.]+$/) printf "%.2f", m / e; else print "-" }')
		note=""
		for t in "${TARGETS[@]}"; do
			if [[ ${ERRS[$name.$t]:-0} != 0 ]]; then note+=" ($t: ${ERRS[$name.$t]} errors)"; fi
			if [[ ${FAILED[$name.$t]:-0} != 0 ]]; then note+=" ($t: ${FAILED[$name.$t]} failed runs)"; fi
		done
		echo "| $name$note | $e | $m | $ratio | $(cell etcd "$name" p99) | $(cell metastore "$name" p99) | $(cell etcd "$name" cpu) | $(cell metastore "$name" cpu) | $(cell etcd "$name" ccpu); $(cell metastore "$name" ccpu) |"
	done
	echo
	if ((BENCH_ROUNDS > 1)); then
		echo "Medians of $BENCH_ROUNDS rounds per server (each round alternates which server runs first)."
		echo
	fi
	echo "CPU µs/req: the server process's user+system CPU time during the run divided by its requests; client CPU µs/req the same for etcd's benchmark tool (on a 2-core machine, 2 cores ÷ (client + server µs/req) bounds req/s)."
	echo
	echo "Workloads (BENCH_SCALE=$BENCH_SCALE):"
	for w in "${WORKLOADS[@]}"; do
		IFS='|' read -r name desc args <<<"$w"
		echo "- $name: $desc — \`benchmark --endpoints=<ep> --precise $args\`"
	done
} >"$RESULTS/table.md"

echo
cat "$RESULTS/table.md"
echo
if ! have metastore && [[ " $BENCH_TARGETS " == *" metastore "* ]]; then
	echo "NOTE: metastore was not measured (not built or not serving yet); its columns say 'pending'."
fi
echo "Raw outputs, server logs and environment: $RESULTS"
