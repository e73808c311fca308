#!/usr/bin/env bash
# pgo-compare.sh — server CPU per request of two metastore binaries A and
# B (by default A built with the profile of scripts/pgo-profile.sh and B
# with -pgo=off; any two builds can be given) under make bench's workloads
# and the 100-client lease keep-alive, the binaries alternating run by run,
# a fresh server (and data directory) per run. Prints one line per run
# (with the load average) and the medians. Server CPU per request is the
# server process's user+system time from /proc/<pid>/stat over the run
# divided by its requests, which the machine's other load moves far less
# than req/s.
#
# Usage: scripts/pgo-compare.sh
#
# Environment:
#   PGO_ROUNDS   rounds per workload and binary (default 3)
#   PGO_SCALE    multiplies every --total (default 0.5)
#   PGO_PROFILE  the profile A is built with (default bin/default.pgo)
#   PGO_A, PGO_B the two binaries (default: both built here into a temp dir)
#   PGO_ONLY     a regular expression: only the workloads whose name matches
set -euo pipefail

LOG_TAG=pgo-compare
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PGO_ROUNDS=${PGO_ROUNDS:-3}
BENCH_SCALE=${PGO_SCALE:-0.5}
[[ $PGO_ROUNDS =~ ^[1-9][0-9]*$ ]] || die "PGO_ROUNDS must be a positive integer"

build_tools
make_work pgo-compare
if [[ -z ${PGO_A:-} || -z ${PGO_B:-} ]]; then
	PGO_PROFILE=$(realpath "${PGO_PROFILE:-$BIN/default.pgo}") || die "no profile (scripts/pgo-profile.sh)"
	[[ -f $PGO_PROFILE ]] || die "no profile $PGO_PROFILE (scripts/pgo-profile.sh)"
	PGO_A=$WORK/metastore.pgo PGO_B=$WORK/metastore.nopgo
	log "building $PGO_A (-pgo=$PGO_PROFILE) and $PGO_B (-pgo=off)"
	(cd "$ROOT" && "$GO" build -pgo="$PGO_PROFILE" -o "$PGO_A" ./cmd/metastore && "$GO" build -pgo=off -o "$PGO_B" ./cmd/metastore)
fi

N_PUT1=$(scaled 30000)
N_PUT100=$(scaled 300000)
N_RANGE=$(scaled 500000)
N_TXN=$(scaled 300000)
N_LEASE=$(scaled 300000)
WORKLOADS=(
	"put-1c|--conns 1 --clients 1 put --total $N_PUT1 --key-size 8 --val-size 256 --sequential-keys --key-space-size $N_PUT1"
	"put-100c|--conns 10 --clients 100 put --total $N_PUT100 --key-size 8 --val-size 256 --sequential-keys --key-space-size $N_PUT100"
	"range-l-100c|--conns 10 --clients 100 range bench-range-key --consistency l --total $N_RANGE"
	"range-s-100c|--conns 10 --clients 100 range bench-range-key --consistency s --total $N_RANGE"
	"txn-put-100c|--conns 10 --clients 100 txn-put --total $N_TXN --txn-ops 1 --key-size 8 --val-size 256 --key-space-size $N_TXN"
	"lease-keepalive-100c|--conns 10 --clients 100 lease-keepalive --total $N_LEASE"
)

VAL256=$(head -c 256 /dev/zero | tr '\0' 'v')
declare -A CPU=()
# run_one label binary name round args...: server CPU µs/req of one run
run_one() {
	local label=$1 bin=$2 name=$3 r=$4 pid ep c0 c1
	shift 4
	METASTORE_BIN=$bin launch_metastore pgo-cmp "$WORK/data-$label-$name-$r" "$WORK/$label.log"
	pid=$LAUNCHED_PID ep=$LAUNCHED_EP
	PIDS=("$pid")
	wait_healthy "$label" "$pid" "$ep" 30 || die "$bin did not start (log: $WORK/$label.log)"
	"$BIN/etcdctl" --endpoints="$ep" put bench-range-key "$VAL256" >/dev/null
	c0=$(cpu_ticks "$pid")
	run_child "$BIN/benchmark" --endpoints="$ep" "$@" >"$WORK/$label.$name.$r.txt" 2>&1 ||
		log "  benchmark exited with an error (see $WORK/$label.$name.$r.txt)"
	c1=$(cpu_ticks "$pid")
	stop_pid "$pid"
	PIDS=()
	rm -rf "$WORK/data-$label-$name-$r"
	CPU[$label.$name.$r]=$(cpu_us_per_req "$c0" "$c1" "$(total_of "$@")")
	printf '%s\t%s\t%d\t%s\t%s\n' "$name" "$label" "$r" "${CPU[$label.$name.$r]}" "$(cut -d' ' -f1-3 /proc/loadavg)"
}

printf 'workload\tbinary\tround\tserver_cpu_us_per_req\tloadavg\n'
for w in "${WORKLOADS[@]}"; do
	IFS='|' read -r name args <<<"$w"
	[[ -z ${PGO_ONLY:-} || $name =~ $PGO_ONLY ]] || continue
	for ((r = 1; r <= PGO_ROUNDS; r++)); do
		# alternate which binary goes first
		if ((r % 2)); then order=("A $PGO_A" "B $PGO_B"); else order=("B $PGO_B" "A $PGO_A"); fi
		for o in "${order[@]}"; do
			# shellcheck disable=SC2086
			run_one ${o% *} "${o#* }" "$name" "$r" $args
		done
	done
	a=() b=()
	for ((r = 1; r <= PGO_ROUNDS; r++)); do a+=("${CPU[A.$name.$r]}"); b+=("${CPU[B.$name.$r]}"); done
	printf '# %s median µs/req: A %s  B %s\n' "$name" "$(MEDIAN_FMT=%.1f median "${a[@]}")" "$(MEDIAN_FMT=%.1f median "${b[@]}")"
done
