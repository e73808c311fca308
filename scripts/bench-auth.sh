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

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="$ROOT/bin"
GO=${GO:-go}
METASTORE_BIN=${METASTORE_BIN:-$BIN/metastore}
BENCH_SCALE=${BENCH_SCALE:-1}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-600}
BCRYPT_COST=${BCRYPT_COST:-10}
AUTH_SECONDS=${AUTH_SECONDS:-10}
AUTH_CLIENTS=${AUTH_CLIENTS:-8}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=${BENCH_RESULTS:-$ROOT/bench-results/auth-$STAMP}

log() { printf '[bench-auth] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ ! -x "$BIN/benchmark" ]]; then
	log "building etcd's benchmark tool into bin/"
	(cd "$ROOT/tests/tools/benchmark" && "$GO" build -o "$BIN/benchmark" .)
fi
if [[ ! -x "$BIN/etcd" || ! -x "$BIN/etcdctl" ]]; then
	log "building etcd and etcdctl into bin/"
	(cd "$ROOT/tests" && "$GO" build -o "$BIN/" ./tools/etcdctl ./tools/etcd)
fi
log "building authbench and metastore into bin/"
(cd "$ROOT/tests" && "$GO" build -o "$BIN/authbench" ./tools/authbench)
[[ -x "$METASTORE_BIN" ]] || (cd "$ROOT" && "$GO" build -o "$METASTORE_BIN" ./cmd/metastore)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/metastore-bench-auth.XXXXXX")
PIDS=()
BENCH_PID=
cleanup() {
	local pid
	[[ -z $BENCH_PID ]] || { kill "$BENCH_PID" 2>/dev/null || true; wait "$BENCH_PID" 2>/dev/null || true; }
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do
		for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

USED_PORTS=" "
free_port() {
	local lo p
	read -r lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || lo=32768
	((lo > 20000)) || lo=32768
	for _ in $(seq 1 200); do
		p=$((20000 + (RANDOM * 32768 + RANDOM) % (lo - 20000)))
		[[ $USED_PORTS == *" $p "* ]] && continue
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			USED_PORTS+="$p "
			PORT=$p
			return 0
		fi
	done
	die "no free port found"
}

wait_healthy() { # name pid endpoint
	local deadline=$((SECONDS + 30))
	while ((SECONDS < deadline)); do
		kill -0 "$2" 2>/dev/null || die "$1 exited during start-up (log: $RESULTS/$1.log)"
		"$BIN/etcdctl" --endpoints="$3" --dial-timeout=1s --command-timeout=2s endpoint health >/dev/null 2>&1 && return 0
		sleep 0.25
	done
	die "$1 did not become healthy on $3"
}

mkdir -p "$RESULTS"
log "results: $RESULTS"
{
	echo "date_utc: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "host: $(uname -srm)"
	echo "cpus: $(nproc)"
	echo "cpu_model: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
	echo "go: $("$GO" version)"
	echo "git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
	echo "bench_scale: $BENCH_SCALE bcrypt_cost: $BCRYPT_COST"
	echo "loadavg_at_start: $(cut -d' ' -f1-3 /proc/loadavg)"
	"$BIN/etcd" --version 2>&1 || true
} >"$RESULTS/env.txt"

QUOTA=$((8 * 1024 * 1024 * 1024))
declare -A EP=()
TARGETS=(etcd metastore)

free_port; ecp=$PORT
free_port; epp=$PORT
mkdir -p "$WORK/etcd" "$WORK/metastore"
# shellcheck disable=SC2086
"$BIN/etcd" --name bench-etcd --data-dir "$WORK/etcd" \
	--listen-client-urls "http://127.0.0.1:$ecp" --advertise-client-urls "http://127.0.0.1:$ecp" \
	--listen-peer-urls "http://127.0.0.1:$epp" --initial-advertise-peer-urls "http://127.0.0.1:$epp" \
	--initial-cluster "bench-etcd=http://127.0.0.1:$epp" --initial-cluster-state new \
	--quota-backend-bytes "$QUOTA" --log-level warn --bcrypt-cost "$BCRYPT_COST" \
	${ETCD_EXTRA_ARGS:-} >"$RESULTS/etcd.log" 2>&1 &
PIDS+=($!)
wait_healthy etcd "$!" "127.0.0.1:$ecp"
EP[etcd]="127.0.0.1:$ecp"

free_port; mcp=$PORT
# shellcheck disable=SC2086
"$METASTORE_BIN" --name bench-metastore --data-dir "$WORK/metastore" \
	--listen-client-urls "http://127.0.0.1:$mcp" --quota-backend-bytes "$QUOTA" --log-level warn \
	--bcrypt-cost "$BCRYPT_COST" ${METASTORE_EXTRA_ARGS:-} >"$RESULTS/metastore.log" 2>&1 &
PIDS+=($!)
wait_healthy metastore "$!" "127.0.0.1:$mcp"
EP[metastore]="127.0.0.1:$mcp"

RANGE_KEY=bench-range-key
VAL256=$(head -c 256 /dev/zero | tr '\0' 'v')
for t in "${TARGETS[@]}"; do
	"$BIN/etcdctl" --endpoints="${EP[$t]}" put "$RANGE_KEY" "$VAL256" >/dev/null || die "put on $t"
	"$BIN/authbench" setup --endpoint "${EP[$t]}" >>"$RESULTS/setup.$t.txt" 2>&1 || die "auth setup on $t (see $RESULTS/setup.$t.txt)"
done
log "auth enabled on both; benchmarks run as user bench"

scaled() { awk -v n="$1" -v s="$BENCH_SCALE" 'BEGIN { v = int(n * s + 0.5); if (v < 100) v = 100; print v }'; }
N_PUT=$(scaled 300000)
N_RANGE=$(scaled 500000)
U="--user bench:bench"
WORKLOADS=(
	"put-100c|put as bench, 100 clients / 10 conns, 8 B keys, 256 B values|$U --conns 10 --clients 100 put --total $N_PUT --key-size 8 --val-size 256 --sequential-keys --key-space-size $N_PUT"
	"range-l-100c|range one key as bench, linearizable, 100 clients / 10 conns|$U --conns 10 --clients 100 range $RANGE_KEY --consistency l --total $N_RANGE"
	"range-s-100c|range one key as bench, serializable, 100 clients / 10 conns|$U --conns 10 --clients 100 range $RANGE_KEY --consistency s --total $N_RANGE"
)

declare -A RPS=() P99=() ERRS=()
parse() { # key file
	RPS[$1]=$(awk -F'\t' '/^ *Requests\/sec:/ {printf "%.0f", $2}' "$2")
	P99[$1]=$(awk '$1 == "99%" && $2 == "in" {printf "%.2f", $3 * 1000}' "$2")
	ERRS[$1]=$(awk '/^Error distribution:/ {e=1; next} e && match($0, /\[[0-9]+\]/) {n += substr($0, RSTART+1, RLENGTH-2)} END {print n+0}' "$2")
	[[ -n ${RPS[$1]} ]] || RPS[$1]=failed
}

for w in "${WORKLOADS[@]}"; do
	IFS='|' read -r name _ args <<<"$w"
	for t in "${TARGETS[@]}"; do
		out="$RESULTS/$name.$t.txt"
		log "$name → $t"
		# shellcheck disable=SC2086
		timeout "$BENCH_TIMEOUT" "$BIN/benchmark" --endpoints="${EP[$t]}" --precise $args >"$out" 2>"$RESULTS/$name.$t.stderr" &
		BENCH_PID=$!
		wait "$BENCH_PID" || log "  benchmark exited with $?"
		BENCH_PID=
		parse "$name.$t" "$out"
		log "  $t: ${RPS[$name.$t]} req/s, p99 ${P99[$name.$t]:-?} ms, errors ${ERRS[$name.$t]}"
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
	echo "| workload | etcd req/s | metastore req/s | ratio (metastore/etcd) | etcd p99 | metastore p99 |"
	echo "|---|---:|---:|---:|---:|---:|"
	for name in put-100c range-l-100c range-s-100c authenticate; do
		e=${RPS[$name.etcd]} m=${RPS[$name.metastore]}
		ratio=$(awk -v e="$e" -v m="$m" 'BEGIN { if (e+0 > 0 && m ~ /^[0-9.]+$/) printf "%.2f", m / e; else print "-" }')
		note=""
		for t in "${TARGETS[@]}"; do [[ ${ERRS[$name.$t]:-0} == 0 ]] || note+=" ($t: ${ERRS[$name.$t]} errors)"; done
		echo "| $name$note | $e | $m | $ratio | ${P99[$name.etcd]:--} ms | ${P99[$name.metastore]:--} ms |"
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
