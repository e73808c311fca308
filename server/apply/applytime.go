package apply

import (
	"errors"
	"time"

	"github.com/metastore-dev/metastore/mvcc"
)

// ApplyObserver is told how long each applied request took, by etcd's
// operation name (the InternalRaftRequest field: "Put", "Txn",
// "LeaseGrant", "AuthUserAdd", ...), and whether it succeeded as etcd
// judges it (no error, or only ErrCompacted). It runs on the apply
// goroutine and must be quick.
type ApplyObserver func(op string, took time.Duration, success bool)

// SetApplyObserver installs f (etcd's etcd_server_apply_duration_seconds
// and etcd_server_slow_apply_total are fed from it).
func (a *Applier) SetApplyObserver(f ApplyObserver) { a.observer.Store(&f) }

// Apply applies one request inside batch b.
func (a *Applier) Apply(b *mvcc.Batch, r *Request) Result {
	obs := a.observer.Load()
	if obs == nil {
		return a.applyOne(b, r)
	}
	start := time.Now()
	res := a.applyOne(b, r)
	(*obs)(ApplyOp(r), time.Since(start), res.Err == nil || errors.Is(res.Err, mvcc.ErrCompacted))
	return res
}

// ApplyOp is etcd's name for the operation of r: "unknown" for none and,
// as etcd labels it, for AuthStatus.
func ApplyOp(r *Request) string {
	switch {
	case r.Range != nil:
		return "Range"
	case r.Put != nil:
		return "Put"
	case r.DeleteRange != nil:
		return "DeleteRange"
	case r.Txn != nil:
		return "Txn"
	case r.Compaction != nil:
		return "Compaction"
	case r.LeaseGrant != nil:
		return "LeaseGrant"
	case r.LeaseRevoke != nil:
		return "LeaseRevoke"
	case r.LeaseCheckpoint != nil:
		return "LeaseCheckpoint"
	case r.Alarm != nil:
		return "Alarm"
	case r.Authenticate != nil:
		return "Authenticate"
	case r.AuthEnable != nil:
		return "AuthEnable"
	case r.AuthDisable != nil:
		return "AuthDisable"
	case r.AuthUserAdd != nil:
		return "AuthUserAdd"
	case r.AuthUserDelete != nil:
		return "AuthUserDelete"
	case r.AuthUserChangePassword != nil:
		return "AuthUserChangePassword"
	case r.AuthUserGrantRole != nil:
		return "AuthUserGrantRole"
	case r.AuthUserGet != nil:
		return "AuthUserGet"
	case r.AuthUserRevokeRole != nil:
		return "AuthUserRevokeRole"
	case r.AuthRoleAdd != nil:
		return "AuthRoleAdd"
	case r.AuthRoleGrantPermission != nil:
		return "AuthRoleGrantPermission"
	case r.AuthRoleGet != nil:
		return "AuthRoleGet"
	case r.AuthRoleRevokePermission != nil:
		return "AuthRoleRevokePermission"
	case r.AuthRoleDelete != nil:
		return "AuthRoleDelete"
	case r.AuthUserList != nil:
		return "AuthUserList"
	case r.AuthRoleList != nil:
		return "AuthRoleList"
	case r.ClusterVersionSet != nil:
		return "ClusterVersionSet"
	case r.ClusterMemberAttrSet != nil:
		return "ClusterMemberAttrSet"
	case r.DowngradeInfoSet != nil:
		return "DowngradeInfoSet"
	}
	return "unknown"
}
