#!/usr/bin/env bash
# bench-watch.sh — watch benchmarks, etcd and metastore side by side: etcd's
# own benchmark tool (watch, watch-latency, watch-get) and a fan-out run
# (tests/tools/watchfanout: 10,000 watchers on one prefix receive 1,000 puts;
# delivery time and server memory).
#
# Usage: scripts/bench-watch.sh        (normally via `make bench-watch`)
#
# Environment:
#   BENCH_REPEAT    runs of each workload per server, alternating servers;
#                   the table shows the median (default 3)
#   BENCH_TARGETS   servers to measure (default "etcd metastore")
#   BENCH_RESULTS   results directory (default bench-results/watch-<UTC timestamp>)
#   BENCH_TIMEOUT   seconds one run may take before it is killed (default 600)
#   FANOUT_WATCHERS / FANOUT_PUTS   fan-out size (default 10000 / 1000)
#   METASTORE_BIN   the metastore binary (default bin/metastore)
#
# Every run starts fresh servers (own data directories, free loopback ports)
# so that runs do not inherit each other's watchers, keys or memory. Servers
# run with fsync, as in production.
set -euo pipefail

LOG_TAG=bench-watch
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCH_REPEAT=${BENCH_REPEAT:-3}
BENCH_TARGETS=${BENCH_TARGETS:-etcd metastore}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-600}
FANOUT_WATCHERS=${FANOUT_WATCHERS:-10000}
FANOUT_PUTS=${FANOUT_PUTS:-1000}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=${BENCH_RESULTS:-$ROOT/bench-results/watch-$STAMP}

build_tools watchfanout
build_metastore
make_work bench-watch

# One server at a time, fresh for every run.
SERVER_PID=
stop_server() {
	[[ -n $SERVER_PID ]] || return 0
	stop_pid "$SERVER_PID"
	PIDS=()
	SERVER_PID=
}

# start_server target: starts a fresh server; sets SERVER_PID and EP.
start_server() {
	local t=$1
	rm -rf "$WORK/$t-data"
	case $t in
	etcd) launch_etcd bench "$WORK/$t-data" "$RESULTS/etcd.log" --log-level warn ;;
	metastore) launch_metastore bench "$WORK/$t-data" "$RESULTS/metastore.log" --log-level warn ;;
	esac
	SERVER_PID=$LAUNCHED_PID
	PIDS=("$SERVER_PID")
	EP=$LAUNCHED_EP
	wait_healthy "$t" "$SERVER_PID" "$EP" || die "$t did not start (see $RESULTS/$t.log)"
}

mkdir -p "$RESULTS"
log "results: $RESULTS"
{
	env_lines
	echo "tmp_fs: $(df -PT "$WORK" | awk 'NR==2 {print $2" on "$1}')"
	echo "bench_repeat: $BENCH_REPEAT"
	echo "--- etcd --version"
	"$BIN/etcd" --version 2>&1 || true
} >"$RESULTS/env.txt"

# -------------------------------------------------------------- workloads ---

# name|description|command (BENCH and EP are substituted at run time)
WORKLOADS=(
	"watch|etcd benchmark watch: 10 streams x 100 watchers on one key, 1,000 puts by 10 clients (events received per second)|benchmark --endpoints=EP --precise --conns 10 --clients 10 watch --streams 10 --watch-per-stream 100 --put-total 1000"
	"watch-latency|etcd benchmark watch-latency: 10 streams x 10 watchers, 1,000 puts at 100/s (put-to-event latency)|benchmark --endpoints=EP --precise watch-latency --put-total 1000 --put-rate 100 --streams 10 --watchers-per-stream 10"
	"watch-get|etcd benchmark watch-get: 10,000 watchers on one stream catching up 8 revisions each, serializable gets meanwhile|benchmark --endpoints=EP --precise watch-get --watchers 10000 --streams 1 --events 8"
	"fanout|watchfanout: $FANOUT_WATCHERS watchers on one prefix (100 streams, 10 connections), $FANOUT_PUTS puts by 10 writers|watchfanout --endpoints EP --pid PID --watchers $FANOUT_WATCHERS --streams 100 --conns 10 --puts $FANOUT_PUTS --writers 10"
)

# summary_field file title field: a field of one summary section of etcd's
# benchmark output ("Requests/sec", "99%", "Average").
summary_field() {
	awk -v title="$2" -v field="$3" '
		/summary:$/ { insec = ($0 == title) }
		insec && field == "Requests/sec" && $1 == "Requests/sec:" { print $2; exit }
		insec && field == "Average" && $1 == "Average:" { print $2; exit }
		insec && field == "99%" && $1 == "99%" && $2 == "in" { print $3; exit }
	' "$1"
}

declare -A VALS=()

# record target name metric value
record() { VALS[$1.$2.$3]+="$4 "; }

run_one() { # target name cmd
	local t=$1 name=$2 cmd=$3 out rc=0
	start_server "$t"
	out="$RESULTS/$name.$t.$(date +%s%N).txt"
	cmd=${cmd//EP/$EP}
	cmd=${cmd//PID/$SERVER_PID}
	echo "# $cmd (load $(cut -d' ' -f1-3 /proc/loadavg))" >"$out"
	log "$name → $t: $cmd"
	# shellcheck disable=SC2086
	run_child timeout "$BENCH_TIMEOUT" "$BIN/"$cmd >>"$out" 2>"$out.stderr" || rc=$?
	((rc == 0)) || log "  exited with status $rc (see $out)"
	# server CPU time (user+system) over the run, fresh server included
	record "$t" "$name" "server cpu s" "$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/hz}' "/proc/$SERVER_PID/stat")"
	case $name in
	watch)
		record "$t" "$name" "events/s" "$(summary_field "$out" "Watch events received summary:" "Requests/sec")"
		;;
	watch-latency)
		record "$t" "$name" "p99 ms" "$(summary_field "$out" "Watch events summary:" "99%" | awk '{printf "%.2f", $1*1000}')"
		record "$t" "$name" "avg ms" "$(summary_field "$out" "Watch events summary:" "Average" | awk '{printf "%.2f", $1*1000}')"
		;;
	watch-get)
		record "$t" "$name" "gets/s" "$(summary_field "$out" "Get during watch summary:" "Requests/sec")"
		record "$t" "$name" "get p99 ms" "$(summary_field "$out" "Get during watch summary:" "99%" | awk '{printf "%.2f", $1*1000}')"
		;;
	fanout)
		record "$t" "$name" "delivery s" "$(awk '/^delivery:/ {print $2}' "$out")"
		record "$t" "$name" "events/s" "$(awk '/^delivery:/ {print $9}' "$out")"
		record "$t" "$name" "responses" "$(awk '/^responses:/ {print $2}' "$out")"
		record "$t" "$name" "rss watching MiB" "$(awk '/^server rss:/ {print $7}' "$out")"
		record "$t" "$name" "rss peak MiB" "$(awk '/^server rss:/ {print $10}' "$out")"
		;;
	esac
	stop_server
}

for w in "${WORKLOADS[@]}"; do
	IFS='|' read -r name _ cmd <<<"$w"
	for _ in $(seq 1 "$BENCH_REPEAT"); do
		for t in $BENCH_TARGETS; do
			run_one "$t" "$name" "$cmd"
		done
	done
done

# ------------------------------------------------------------------ table ---

median() { tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g | awk '{a[NR]=$1} END { if (NR == 0) print "-"; else if (NR % 2) printf "%.4g\n", a[(NR+1)/2]; else printf "%.4g\n", (a[NR/2]+a[NR/2+1])/2 }'; }

{
	echo "| workload | metric | etcd | metastore | metastore/etcd | runs (etcd; metastore) |"
	echo "|---|---|---:|---:|---:|---|"
	for w in "${WORKLOADS[@]}"; do
		IFS='|' read -r name _ _ <<<"$w"
		for key in "${!VALS[@]}"; do
			[[ $key == etcd.$name.* || $key == metastore.$name.* ]] || continue
			echo "${key#*.}"
		done | sort -u | while read -r nm; do
			metric=${nm#"$name".}
			e=$(median "${VALS[etcd.$nm]:-}")
			m=$(median "${VALS[metastore.$nm]:-}")
			ratio=$(awk -v e="$e" -v m="$m" 'BEGIN { if (e+0 > 0 && m ~ /^[0-9.e+]+$/) printf "%.2f", m / e; else print "-" }')
			runs() { tr ' ' '\n' <<<"$1" | awk 'NF { printf "%s%.4g", (n++ ? " " : ""), $1 }'; }
			printf '| %s | %s | %s | %s | %s | %s; %s |\n' "$name" "$metric" "$e" "$m" "$ratio" "$(runs "${VALS[etcd.$nm]:-}")" "$(runs "${VALS[metastore.$nm]:-}")"
		done
	done
	echo
	echo "Median of $BENCH_REPEAT runs per server, servers alternating, each run on fresh servers."
	for w in "${WORKLOADS[@]}"; do
		IFS='|' read -r name desc cmd <<<"$w"
		echo "- $name: $desc — \`$cmd\`"
	done
} >"$RESULTS/table.md"

echo
cat "$RESULTS/table.md"
echo "Raw outputs and environment: $RESULTS"
