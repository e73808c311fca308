# lib.sh — what the side-by-side benchmarks (scripts/bench*.sh) share:
# logging, building the tools, starting etcd and metastore on free loopback
# ports, waiting for them to be healthy, stopping everything on exit, and
# reading etcd's benchmark tool's summary. Sourced, not run:
#
#	LOG_TAG=bench-x
#	source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# It sets ROOT, BIN, GO and METASTORE_BIN (environment overrides the last
# two), and installs an EXIT trap that stops CHILD (the run in progress),
# every pid in PIDS (servers: SIGTERM, then SIGKILL after 5 s) and removes
# WORK (see make_work).
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="$ROOT/bin"
GO=${GO:-go}
METASTORE_BIN=${METASTORE_BIN:-$BIN/metastore}

log() { printf '[%s] %s\n' "${LOG_TAG:-bench}" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# ---------------------------------------------------------------- tools ---

# build_tools [tool...]: etcd's benchmark tool, etcd and etcdctl into bin/
# if missing; then each named tests/tools/<tool> (always: they are small and
# follow the tree).
build_tools() {
	if [[ ! -x "$BIN/benchmark" ]]; then
		log "building etcd's benchmark tool into bin/ (tests/tools/benchmark)"
		(cd "$ROOT/tests/tools/benchmark" && "$GO" build -o "$BIN/benchmark" .)
	fi
	if [[ ! -x "$BIN/etcd" || ! -x "$BIN/etcdctl" ]]; then
		log "building etcd and etcdctl into bin/ (tests/tools)"
		(cd "$ROOT/tests" && "$GO" build -o "$BIN/" ./tools/etcdctl ./tools/etcd)
	fi
	local t
	for t in "$@"; do
		log "building $t into bin/ (tests/tools/$t)"
		(cd "$ROOT/tests" && "$GO" build -o "$BIN/$t" "./tools/$t")
	done
}

# build_metastore: $METASTORE_BIN from the work tree if it is missing.
build_metastore() {
	[[ -x "$METASTORE_BIN" ]] && return 0
	log "building $METASTORE_BIN"
	(cd "$ROOT" && "$GO" build -o "$METASTORE_BIN" ./cmd/metastore)
}

# ------------------------------------------------------------ processes ---

WORK=
PIDS=()
CHILD=

# make_work name: a temporary directory for data, removed on exit.
make_work() { WORK=$(mktemp -d "${TMPDIR:-/tmp}/metastore-$1.XXXXXX"); }

# stop_pid pid: SIGTERM, up to 5 s to exit, then SIGKILL.
stop_pid() {
	kill "$1" 2>/dev/null || true
	for _ in $(seq 1 50); do
		kill -0 "$1" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

lib_cleanup() {
	local pid
	if [[ -n $CHILD ]]; then
		kill "$CHILD" 2>/dev/null || true
		wait "$CHILD" 2>/dev/null || true
	fi
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
	[[ -z $WORK ]] || rm -rf "$WORK"
}
trap lib_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# run_child cmd...: runs a command in the background as CHILD and waits, so
# that a signal stops it at once; returns its status.
run_child() {
	local rc=0
	"$@" &
	CHILD=$!
	wait "$CHILD" || rc=$?
	CHILD=
	return "$rc"
}

# free_port sets PORT to a loopback TCP port nothing listens on, below the
# kernel's ephemeral range and distinct from the ports handed out before.
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

healthy() { # endpoint
	"$BIN/etcdctl" --endpoints="$1" --dial-timeout=1s --command-timeout=2s \
		endpoint health >/dev/null 2>&1
}

# wait_healthy name pid endpoint [seconds]: 0 once etcdctl endpoint health
# succeeds; 1 (with a message) if the process exits or time runs out.
wait_healthy() {
	local name=$1 pid=$2 ep=$3 deadline=$((SECONDS + ${4:-30}))
	while ((SECONDS < deadline)); do
		if ! kill -0 "$pid" 2>/dev/null; then
			log "$name exited during start-up"
			return 1
		fi
		healthy "$ep" && return 0
		sleep 0.25
	done
	log "$name did not become healthy on $ep within ${4:-30}s"
	return 1
}

# launch_etcd name data-dir log [flag...]: starts bin/etcd as a one-member
# cluster on free loopback ports (log appended to); sets LAUNCHED_PID and
# LAUNCHED_EP. Does not wait for it.
launch_etcd() {
	local name=$1 dir=$2 logf=$3 cport pport
	shift 3
	free_port; cport=$PORT
	free_port; pport=$PORT
	mkdir -p "$dir"
	"$BIN/etcd" --name "$name" --data-dir "$dir" \
		--listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
		--listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
		--initial-cluster "$name=http://127.0.0.1:$pport" --initial-cluster-state new \
		"$@" >>"$logf" 2>&1 &
	LAUNCHED_PID=$!
	LAUNCHED_EP="127.0.0.1:$cport"
}

# launch_metastore name data-dir log [flag...]: starts $METASTORE_BIN on a
# free loopback port, as launch_etcd.
launch_metastore() {
	local name=$1 dir=$2 logf=$3
	shift 3
	free_port
	mkdir -p "$dir"
	"$METASTORE_BIN" --name "$name" --data-dir "$dir" \
		--listen-client-urls "http://127.0.0.1:$PORT" "$@" >>"$logf" 2>&1 &
	LAUNCHED_PID=$!
	LAUNCHED_EP="127.0.0.1:$PORT"
}

# ------------------------------------------------------------- results ---

# env_lines: what every results directory records about the machine and
# the tree (scripts add their own settings after it).
env_lines() {
	echo "date_utc: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "host: $(uname -srm)"
	echo "cpus: $(nproc)"
	echo "cpu_model: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
	echo "mem: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
	echo "go: $("$GO" version 2>/dev/null || echo unknown)"
	echo "git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
	echo "loadavg_at_start: $(cut -d' ' -f1-3 /proc/loadavg)"
}

# scaled n: n × BENCH_SCALE, rounded, at least 100.
scaled() { awk -v n="$1" -v s="${BENCH_SCALE:-1}" 'BEGIN { v = int(n * s + 0.5); if (v < 100) v = 100; print v }'; }

# Readers of etcd's benchmark tool output: req/s, p99 in ms, and the number
# of errors (listed under "Error distribution:" as "  [count]\tmessage").
bench_rps() { awk -F'\t' '/^ *Requests\/sec:/ {printf "%.0f", $2}' "$1"; }
bench_p99() { awk '$1 == "99%" && $2 == "in" {printf "%.2f", $3 * 1000}' "$1"; }
bench_errors() { awk '/^Error distribution:/ {e=1; next} e && match($0, /\[[0-9]+\]/) {n += substr($0, RSTART+1, RLENGTH-2)} END {print n+0}' "$1"; }

# cpu_ticks pid: user+system CPU time of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# cpu_us_per_req ticks-before ticks-after requests: a server's CPU time per
# request in µs. Less sensitive to other load on the machine than req/s
# (the servers share the cores with the benchmark client).
cpu_us_per_req() {
	awk -v c0="$1" -v c1="$2" -v tck="$(getconf CLK_TCK)" -v n="$3" \
		'BEGIN { if (n > 0) printf "%.1f", (c1 - c0) / tck / n * 1e6 }'
}

# total_of arg...: the value of --total in a benchmark command line.
total_of() { awk -v a="$*" 'BEGIN { n = split(a, f, " "); for (i = 1; i < n; i++) if (f[i] == "--total") print f[i+1] }'; }

# median value...: the median of the numeric arguments, printed with the
# printf format MEDIAN_FMT (nothing if there are none).
median() {
	printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g |
		awk -v f="$MEDIAN_FMT" '{a[NR] = $1} END { if (NR == 0) exit; m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf f, m }'
}

# children_cpu sets CHILDREN_CPU_US to the user+system CPU time, in µs, of
# this shell's children that have exited: read around a benchmark run, the
# benchmark tool's (the client's CPU per request). NB: `times` must run in
# this shell, so this sets a variable instead of printing.
children_cpu() {
	local f
	f=$(mktemp)
	times >"$f"
	CHILDREN_CPU_US=$(awk 'NR == 2 { n = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); n += a[1] * 60 + a[2] }; printf "%.0f", n * 1e6 }' "$f")
	rm -f "$f"
}
