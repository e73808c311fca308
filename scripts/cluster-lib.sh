# cluster-lib.sh — 3-member clusters of etcd or metastore on loopback, with
# etcd's own clustering flags (the same for both). Sourced after lib.sh:
#
#	scripts/cluster.sh       (make cluster)        a local cluster in the foreground
#	scripts/bench.sh         with BENCH_CLUSTER=3  (make bench-cluster): start_etcd,
#	                         start_metastore and cpu_ticks are redefined here so
#	                         that every workload runs against 3-member clusters
#
# shellcheck shell=bash

# launch_member kind name data-dir log client-port peer-port initial-cluster token [flag...]:
# starts one member (bin/etcd or $METASTORE_BIN) in the background; sets
# LAUNCHED_PID and LAUNCHED_EP. Does not wait for it.
launch_member() {
	local kind=$1 name=$2 dir=$3 logf=$4 cport=$5 pport=$6 initial=$7 token=$8 bin
	shift 8
	case $kind in
	etcd) bin=$BIN/etcd ;;
	metastore) bin=$METASTORE_BIN ;;
	*) die "unknown kind $kind" ;;
	esac
	mkdir -p "$dir"
	"$bin" --name "$name" --data-dir "$dir" \
		--listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
		--listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
		--initial-cluster "$initial" --initial-cluster-state new --initial-cluster-token "$token" \
		"$@" >>"$logf" 2>&1 &
	LAUNCHED_PID=$!
	LAUNCHED_EP="127.0.0.1:$cport"
}

# launch_cluster kind prefix work-dir log-dir [flag...]: starts a 3-member
# cluster on free loopback ports and waits until every member is healthy.
# Sets CLUSTER_EPS (comma-separated client endpoints) and CLUSTER_PIDS
# (space-separated); the pids are added to PIDS (stopped on exit). Returns
# 1 if a member does not become healthy.
launch_cluster() {
	local kind=$1 prefix=$2 work=$3 logs=$4 i initial="" 
	shift 4
	local -a cports=() pports=() pids=() eps=()
	for i in 1 2 3; do
		free_port; cports+=("$PORT")
		free_port; pports+=("$PORT")
		initial+="${initial:+,}$prefix$i=http://127.0.0.1:${pports[i-1]}"
	done
	for i in 1 2 3; do
		launch_member "$kind" "$prefix$i" "$work/$prefix$i" "$logs/$prefix$i.log" \
			"${cports[i-1]}" "${pports[i-1]}" "$initial" "$prefix-$$" "$@"
		pids+=("$LAUNCHED_PID")
		eps+=("$LAUNCHED_EP")
		PIDS+=("$LAUNCHED_PID")
	done
	for i in 1 2 3; do
		wait_healthy "$prefix$i" "${pids[i-1]}" "${eps[i-1]}" 60 || return 1
	done
	CLUSTER_EPS=$(IFS=,; echo "${eps[*]}")
	CLUSTER_PIDS="${pids[*]}"
}

# ------------------------------------------- bench.sh with BENCH_CLUSTER ---

if [[ -n ${BENCH_CLUSTER:-} ]]; then
	[[ $BENCH_CLUSTER == 3 ]] || die "BENCH_CLUSTER: only 3-member clusters are set up (got $BENCH_CLUSTER)"

	# cpu_ticks "pid...": user+system CPU time of every member, in clock ticks.
	cpu_ticks() {
		local p s=0
		for p in $1; do
			s=$((s + $(awk '{print $14 + $15}' "/proc/$p/stat")))
		done
		echo "$s"
	}

	start_cluster_of() { # kind
		local kind=$1 help
		local -a opt=(--quota-backend-bytes "$QUOTA" --log-level warn)
		if [[ $kind == metastore ]]; then
			build_metastore
			help=$(timeout 10 "$METASTORE_BIN" --help 2>&1 || true)
			[[ $help == *--initial-cluster* ]] || die "$METASTORE_BIN has no --initial-cluster"
		fi
		local extra
		if [[ $kind == etcd ]]; then extra=${ETCD_EXTRA_ARGS:-}; else extra=${METASTORE_EXTRA_ARGS:-}; fi
		# shellcheck disable=SC2086
		if launch_cluster "$kind" "bench-$kind-" "$WORK/$kind" "$RESULTS" "${opt[@]}" $extra; then
			EP[$kind]=$CLUSTER_EPS
			PID[$kind]=$CLUSTER_PIDS
			TARGETS+=("$kind")
			log "$kind: 3 members healthy on $CLUSTER_EPS (pids $CLUSTER_PIDS)"
		else
			die "the 3-member $kind cluster did not start; see $RESULTS/bench-$kind-*.log"
		fi
	}
	start_etcd() { start_cluster_of etcd; }
	start_metastore() { start_cluster_of metastore; }
fi
