#!/usr/bin/env bash
# bench-policy.sh — the cost of a WebAssembly policy end to end: two
# metastore servers with auth enabled, one plain and one with the
# tenant-isolation policy (policies/tenantisolation) first in the chain and
# matching every request, driven alternately by etcd's benchmark tool as a
# non-root user (put and range, 100 clients). Prints req/s per round and the
# median ratio policy/plain; record it in docs/benchmarks-wasm.md.
#
# Usage: scripts/bench-policy.sh   (normally via `make bench-policy`)
#
# Environment:
#   BENCH_SCALE    multiplies every --total (default 1; 0.2 for a quick run)
#   BENCH_ROUNDS   rounds, alternating which server goes first (default 3)
#   BENCH_RESULTS  results directory (default bench-results/policy-<UTC timestamp>)
set -euo pipefail

LOG_TAG=bench-policy
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCH_SCALE=${BENCH_SCALE:-1}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=${BENCH_RESULTS:-$ROOT/bench-results/policy-$STAMP}

build_tools authbench
log "building $METASTORE_BIN"
(cd "$ROOT" && "$GO" build -o "$METASTORE_BIN" ./cmd/metastore)
mkdir -p "$RESULTS"
WASM="$RESULTS/tenantisolation.wasm"
(cd "$ROOT" && GOOS=wasip1 GOARCH=wasm "$GO" build -buildmode=c-shared -trimpath -ldflags=-s -o "$WASM" ./policies/tenantisolation)
SUM=$(sha256sum "$WASM" | cut -d' ' -f1)
cat >"$RESULTS/policy.yaml" <<YAML
policies:
  - name: tenant-isolation
    module: $WASM
    sha256: $SUM
    hooks: [authorize]
    settings: { root: /tenants/ }
YAML

make_work bench-policy
declare -A EP=()
for t in plain policy; do
	extra=()
	[[ $t == policy ]] && extra=(--policy-config "$RESULTS/policy.yaml")
	launch_metastore "bench-$t" "$WORK/$t" "$RESULTS/$t.log" --log-level warn --bcrypt-cost 4 "${extra[@]}"
	PIDS+=("$LAUNCHED_PID")
	EP[$t]=$LAUNCHED_EP
	wait_healthy "$t" "$LAUNCHED_PID" "${EP[$t]}" || die "$t did not start (log: $RESULTS/$t.log)"
	"$BIN/etcdctl" --endpoints="${EP[$t]}" put bench-range-key "$(head -c 256 /dev/zero | tr '\0' v)" >/dev/null || die "put on $t"
	"$BIN/authbench" setup --endpoint "${EP[$t]}" >"$RESULTS/setup.$t.txt" 2>&1 || die "auth setup on $t"
done

N_PUT=$(scaled 300000)
N_RANGE=$(scaled 500000)
U="--user bench:bench"
WORKLOADS=(
	"put|$U --conns 10 --clients 100 put --total $N_PUT --key-size 8 --val-size 256 --sequential-keys --key-space-size $N_PUT"
	"range-l|$U --conns 10 --clients 100 range bench-range-key --consistency l --total $N_RANGE"
)
: >"$RESULTS/runs.tsv"
for ((r = 1; r <= BENCH_ROUNDS; r++)); do
	order=(plain policy)
	((r % 2 == 0)) && order=(policy plain)
	for w in "${WORKLOADS[@]}"; do
		IFS='|' read -r name args <<<"$w"
		for t in "${order[@]}"; do
			out="$RESULTS/$name.$t.$r.txt"
			# shellcheck disable=SC2086
			"$BIN/benchmark" --endpoints="${EP[$t]}" --precise $args >"$out" 2>/dev/null || log "benchmark failed"
			v=$(bench_rps "$out")
			log "round $r $name $t: $v req/s"
			printf '%s\t%s\t%s\t%s\n' "$r" "$name" "$t" "$v" >>"$RESULTS/runs.tsv"
		done
	done
done
# Prove the policy was in the chain: its decisions by verdict.
CALLS=$(curl -s "http://${EP[policy]}/metrics" | awk '/^metastore_policy_calls_total/ && $NF > 0 {printf "%s %s; ", $1, $2}')
[[ -n $CALLS ]] || log "warning: no policy calls recorded on the policy server"
{
	echo "| workload | plain req/s (median) | with policy req/s (median) | ratio |"
	echo "|---|---:|---:|---:|"
	for w in "${WORKLOADS[@]}"; do
		IFS='|' read -r name _ <<<"$w"
		p=$(awk -v n="$name" '$2==n && $3=="plain" {print $4}' "$RESULTS/runs.tsv" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
		q=$(awk -v n="$name" '$2==n && $3=="policy" {print $4}' "$RESULTS/runs.tsv" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
		echo "| $name | $p | $q | $(awk -v p="$p" -v q="$q" 'BEGIN { if (p > 0) printf "%.2f", q / p }') |"
	done
	echo
	echo "BENCH_SCALE=$BENCH_SCALE, $BENCH_ROUNDS rounds alternating order; loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "policy decisions: $CALLS"
} >"$RESULTS/table.md"
cat "$RESULTS/table.md"
