#!/usr/bin/env bash
# cluster.sh — a local 3-member cluster in the foreground (make cluster),
# laid out as etcd's Procfile lays out its own: members infra1, infra2 and
# infra3 with client URLs http://127.0.0.1:2379, :22379, :32379 and peer
# URLs http://127.0.0.1:2380, :22380, :32380, each line of output prefixed
# with the member's name. Ctrl-C stops all three (SIGTERM, then SIGKILL
# after 5 s).
#
# Environment:
#   CLUSTER_DIR     data directories (default ./default.cluster/infra{1,2,3});
#                   kept, so the next run restarts the same cluster
#   CLUSTER_FRESH=1 remove CLUSTER_DIR first (a new cluster)
#   CLUSTER_KIND    metastore (default) or etcd: the same cluster of etcd
#                   3.6 built from its Go module, for comparison
#   CLUSTER_ARGS    extra flags for every member
set -euo pipefail

LOG_TAG=cluster
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/cluster-lib.sh
source "$ROOT/scripts/cluster-lib.sh"

KIND=${CLUSTER_KIND:-metastore}
DIR=${CLUSTER_DIR:-$ROOT/default.cluster}
[[ $KIND == metastore || $KIND == etcd ]] || die "CLUSTER_KIND must be metastore or etcd"
if [[ $KIND == etcd ]]; then
	build_tools
else
	build_metastore
	[[ -x $BIN/etcdctl ]] || build_tools
fi
if [[ ${CLUSTER_FRESH:-} == 1 ]]; then
	rm -rf "$DIR"
fi
mkdir -p "$DIR"

CPORTS=(2379 22379 32379)
PPORTS=(2380 22380 32380)
INITIAL="infra1=http://127.0.0.1:2380,infra2=http://127.0.0.1:22380,infra3=http://127.0.0.1:32380"
for p in "${CPORTS[@]}" "${PPORTS[@]}"; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
		die "port $p is in use (another cluster or a make run?)"
	fi
done

EPS=127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379
for i in 0 1 2; do
	name=infra$((i + 1))
	# shellcheck disable=SC2086
	launch_member "$KIND" "$name" "$DIR/$name" /dev/stdout "${CPORTS[i]}" "${PPORTS[i]}" \
		"$INITIAL" etcd-cluster-1 ${CLUSTER_ARGS:-} > >(sed -u "s/^/$name | /") 2>&1
	PIDS+=("$LAUNCHED_PID")
done
for i in 0 1 2; do
	wait_healthy "infra$((i + 1))" "${PIDS[i]}" "127.0.0.1:${CPORTS[i]}" 60 || die "infra$((i + 1)) did not start"
done
log "3-member $KIND cluster up, data in $DIR. Try:"
cat >&2 <<EOF

  bin/etcdctl --endpoints=$EPS put foo bar
  bin/etcdctl --endpoints=$EPS get foo
  bin/etcdctl --endpoints=$EPS member list -w table
  bin/etcdctl --endpoints=$EPS endpoint status --cluster -w table
  bin/etcdctl --endpoints=$EPS endpoint health --cluster

Ctrl-C stops all three.
EOF
# Any member exiting ends the run (and the trap stops the others).
wait -n "${PIDS[@]}" || true
log "a member exited; stopping the cluster"
exit 1
