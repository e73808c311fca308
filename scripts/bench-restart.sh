#!/usr/bin/env bash
# bench-restart.sh — a large data set, etcd and metastore side by side: load
# RESTART_KEYS keys (default 1,000,000) with etcd's benchmark tool, then
# measure the server's memory after the load, how long a clean stop
# (SIGTERM) takes, how long a restart takes until the server answers
# /health, its memory after the restart, and the same after a crash
# (SIGKILL), which leaves the newest writes to be replayed from the log.
#
# Usage: scripts/bench-restart.sh      (normally via `make bench-restart`)
#
# Environment:
#   BENCH_REPEAT    rounds per server, alternating servers (default 1)
#   BENCH_TARGETS   servers to measure (default "etcd metastore")
#   BENCH_RESULTS   results directory (default bench-results/restart-<UTC timestamp>)
#   RESTART_KEYS    keys to load (default 1000000), 8-byte keys
#   RESTART_VALUE   value size in bytes (default 256)
#   RESTART_IDLE    seconds idle after the load before memory is read again (default 10)
#   METASTORE_BIN   the metastore binary (default bin/metastore)
#
# Every round starts from an empty data directory on free loopback ports.
# etcd runs single-member with an 8 GiB quota (no NOSPACE during the load);
# both run with fsync on and their default settings otherwise.
set -euo pipefail

LOG_TAG=bench-restart
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCH_REPEAT=${BENCH_REPEAT:-1}
BENCH_TARGETS=${BENCH_TARGETS:-etcd metastore}
RESTART_KEYS=${RESTART_KEYS:-1000000}
RESTART_VALUE=${RESTART_VALUE:-256}
RESTART_IDLE=${RESTART_IDLE:-10}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=${BENCH_RESULTS:-$ROOT/bench-results/restart-$STAMP}

build_tools
build_metastore
make_work bench-restart
mkdir -p "$RESULTS"
log "results: $RESULTS"
{
	env_lines
	echo "bench_repeat: $BENCH_REPEAT keys: $RESTART_KEYS value: $RESTART_VALUE idle: $RESTART_IDLE"
} >"$RESULTS/env.txt"

QUOTA=$((8 * 1024 * 1024 * 1024))
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
rss_mib() { awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
hwm_mib() { awk '/^VmHWM:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }

# start target dir: launches the server on dir (kept across restarts) and
# sets SERVER_PID and EP; the ports are chosen once per round.
start() {
	local t=$1 dir=$2
	case $t in
	etcd)
		"$BIN/etcd" --name bench --data-dir "$dir" \
			--listen-client-urls "http://$EP" --advertise-client-urls "http://$EP" \
			--listen-peer-urls "http://$PEER" --initial-advertise-peer-urls "http://$PEER" \
			--initial-cluster "bench=http://$PEER" --initial-cluster-state new \
			--quota-backend-bytes "$QUOTA" --log-level warn >>"$RESULTS/$t.log" 2>&1 &
		;;
	metastore)
		"$METASTORE_BIN" --name bench --data-dir "$dir" \
			--listen-client-urls "http://$EP" --log-level warn >>"$RESULTS/$t.log" 2>&1 &
		;;
	esac
	SERVER_PID=$!
	PIDS=("$SERVER_PID")
}

# serving: polls /health every 5 ms until it answers 200 (both servers
# serve it on the client port only once they can answer requests).
serving() {
	local deadline=$((SECONDS + 120))
	until curl -sf -o /dev/null "http://$EP/health"; do
		kill -0 "$SERVER_PID" 2>/dev/null || die "server exited during start-up"
		((SECONDS < deadline)) || die "server not serving after 120 s"
		sleep 0.005
	done
}

# stop_timed signal: sends it and waits for the exit; sets STOPPED_S to
# the seconds that took. (Not in a $(...) subshell: only this shell can
# wait for its child.)
stop_timed() {
	local t0
	t0=$(now)
	kill "-$1" "$SERVER_PID"
	wait "$SERVER_PID" 2>/dev/null || true
	STOPPED_S=$(since "$t0")
	PIDS=()
}

# count_keys: sets KEYS to the number of keys the server holds; retried
# for a few seconds, as right after start-up a read may still be refused.
count_keys() {
	local out
	KEYS=""
	for _ in $(seq 1 20); do
		out=$("$BIN/etcdctl" --endpoints="$EP" get --prefix "" --count-only -w fields 2>&1) || true
		KEYS=$(awk -F' : ' '/"Count"/ {print $2}' <<<"$out")
		[[ -n $KEYS ]] && return 0
		sleep 0.25
	done
	die "cannot count the keys: $out"
}

# check_keys n: the server holds n keys (a restart lost nothing).
check_keys() {
	count_keys
	[[ $KEYS == "$1" ]] || die "$KEYS keys after the restart, want $1"
}

declare -A VAL=()
METRICS=(load_rps load_cpu_us rss_after_load rss_idle stop_s restart_s rss_restart crash_restart_s rss_crash)
for r in $(seq 1 "$BENCH_REPEAT"); do
	for t in $BENCH_TARGETS; do
		dir="$WORK/$t-$r"
		free_port
		EP="127.0.0.1:$PORT"
		free_port
		PEER="127.0.0.1:$PORT"
		start "$t" "$dir"
		serving
		log "$t round $r: loading $RESTART_KEYS keys"
		c0=$(cpu_ticks "$SERVER_PID")
		run_child "$BIN/benchmark" --endpoints "$EP" --conns 10 --clients 100 \
			put --total "$RESTART_KEYS" --key-space-size "$RESTART_KEYS" --sequential-keys \
			--key-size 8 --val-size "$RESTART_VALUE" >"$RESULTS/$t-$r-load.txt" 2>&1
		load_rps=$(bench_rps "$RESULTS/$t-$r-load.txt")
		load_cpu_us=$(cpu_us_per_req "$c0" "$(cpu_ticks "$SERVER_PID")" "$RESTART_KEYS")
		rss_after_load=$(rss_mib "$SERVER_PID")
		sleep "$RESTART_IDLE"
		rss_idle=$(rss_mib "$SERVER_PID")
		hwm=$(hwm_mib "$SERVER_PID")
		count_keys
		loaded=$KEYS
		stop_timed TERM
		stop_s=$STOPPED_S

		t0=$(now)
		start "$t" "$dir"
		serving
		restart_s=$(since "$t0")
		sleep 1
		rss_restart=$(rss_mib "$SERVER_PID")
		check_keys "$loaded"
		# A crash right after a burst of writes: the log holds them.
		run_child "$BIN/benchmark" --endpoints "$EP" --conns 10 --clients 100 \
			put --total 100000 --key-space-size "$RESTART_KEYS" --sequential-keys \
			--key-size 8 --val-size "$RESTART_VALUE" >"$RESULTS/$t-$r-burst.txt" 2>&1
		count_keys
		loaded=$KEYS
		stop_timed KILL
		t0=$(now)
		start "$t" "$dir"
		serving
		crash_restart_s=$(since "$t0")
		sleep 1
		rss_crash=$(rss_mib "$SERVER_PID")
		check_keys "$loaded"
		stop_timed TERM
		rm -rf "$dir"

		line="$t round $r: load ${load_rps} puts/s (server cpu ${load_cpu_us} µs/put), rss after load ${rss_after_load} MiB (peak ${hwm}), after ${RESTART_IDLE}s idle ${rss_idle} MiB; stop ${stop_s}s; restart ${restart_s}s, rss ${rss_restart} MiB; after kill -9: restart ${crash_restart_s}s, rss ${rss_crash} MiB"
		log "$line"
		echo "$line" >>"$RESULTS/runs.txt"
		for m in "${METRICS[@]}"; do VAL[$t.$m]+="${!m} "; done
	done
done

# ------------------------------------------------------------ the table ---
{
	echo "| metric | ${BENCH_TARGETS// / | } |"
	echo "|---|$(for _ in $BENCH_TARGETS; do printf -- '---:|'; done)"
	for m in "${METRICS[@]}"; do
		row="| $m |"
		for t in $BENCH_TARGETS; do
			# shellcheck disable=SC2086
			row+=" $(MEDIAN_FMT='%g' median ${VAL[$t.$m]}) |"
		done
		echo "$row"
	done
} | tee "$RESULTS/table.md"
