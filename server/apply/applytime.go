package apply

import (
	"errors"
	"time"

	"github.com/metastore-dev/metastore/mvcc"
)

// ApplyObserver is told how long each applied request took, by its
// operation (Op.String is etcd's name: the InternalRaftRequest field,
// "Put", "Txn", "LeaseGrant", "AuthUserAdd", ...), and whether it succeeded as etcd
// judges it (no error, or only ErrCompacted). It runs on the apply
// goroutine and must be quick.
type ApplyObserver func(op Op, took time.Duration, success bool)

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

// Op is an applied request's operation, as etcd names them in
// etcd_server_apply_duration_seconds.
type Op uint8

// The operations; OpUnknown is etcd's "unknown" (no request, and
// AuthStatus, which etcd leaves unnamed).
const (
	OpUnknown Op = iota
	OpRange
	OpPut
	OpDeleteRange
	OpTxn
	OpCompaction
	OpLeaseGrant
	OpLeaseRevoke
	OpLeaseCheckpoint
	OpAlarm
	OpAuthenticate
	OpAuthEnable
	OpAuthDisable
	OpAuthUserAdd
	OpAuthUserDelete
	OpAuthUserChangePassword
	OpAuthUserGrantRole
	OpAuthUserGet
	OpAuthUserRevokeRole
	OpAuthRoleAdd
	OpAuthRoleGrantPermission
	OpAuthRoleGet
	OpAuthRoleRevokePermission
	OpAuthRoleDelete
	OpAuthUserList
	OpAuthRoleList
	OpClusterVersionSet
	OpClusterMemberAttrSet
	OpDowngradeInfoSet
	// NumOps bounds the operations, for tables indexed by Op.
	NumOps
)

var opNames = [NumOps]string{"unknown", "Range", "Put", "DeleteRange", "Txn", "Compaction", "LeaseGrant", "LeaseRevoke", "LeaseCheckpoint", "Alarm", "Authenticate", "AuthEnable", "AuthDisable", "AuthUserAdd", "AuthUserDelete", "AuthUserChangePassword", "AuthUserGrantRole", "AuthUserGet", "AuthUserRevokeRole", "AuthRoleAdd", "AuthRoleGrantPermission", "AuthRoleGet", "AuthRoleRevokePermission", "AuthRoleDelete", "AuthUserList", "AuthRoleList", "ClusterVersionSet", "ClusterMemberAttrSet", "DowngradeInfoSet"}

// String is etcd's name of the operation.
func (o Op) String() string {
	if o >= NumOps {
		return opNames[OpUnknown]
	}
	return opNames[o]
}

// ApplyOp is the operation of r.
func ApplyOp(r *Request) Op {
	switch {
	case r.Range != nil:
		return OpRange
	case r.Put != nil:
		return OpPut
	case r.DeleteRange != nil:
		return OpDeleteRange
	case r.Txn != nil:
		return OpTxn
	case r.Compaction != nil:
		return OpCompaction
	case r.LeaseGrant != nil:
		return OpLeaseGrant
	case r.LeaseRevoke != nil:
		return OpLeaseRevoke
	case r.LeaseCheckpoint != nil:
		return OpLeaseCheckpoint
	case r.Alarm != nil:
		return OpAlarm
	case r.Authenticate != nil:
		return OpAuthenticate
	case r.AuthEnable != nil:
		return OpAuthEnable
	case r.AuthDisable != nil:
		return OpAuthDisable
	case r.AuthUserAdd != nil:
		return OpAuthUserAdd
	case r.AuthUserDelete != nil:
		return OpAuthUserDelete
	case r.AuthUserChangePassword != nil:
		return OpAuthUserChangePassword
	case r.AuthUserGrantRole != nil:
		return OpAuthUserGrantRole
	case r.AuthUserGet != nil:
		return OpAuthUserGet
	case r.AuthUserRevokeRole != nil:
		return OpAuthUserRevokeRole
	case r.AuthRoleAdd != nil:
		return OpAuthRoleAdd
	case r.AuthRoleGrantPermission != nil:
		return OpAuthRoleGrantPermission
	case r.AuthRoleGet != nil:
		return OpAuthRoleGet
	case r.AuthRoleRevokePermission != nil:
		return OpAuthRoleRevokePermission
	case r.AuthRoleDelete != nil:
		return OpAuthRoleDelete
	case r.AuthUserList != nil:
		return OpAuthUserList
	case r.AuthRoleList != nil:
		return OpAuthRoleList
	case r.ClusterVersionSet != nil:
		return OpClusterVersionSet
	case r.ClusterMemberAttrSet != nil:
		return OpClusterMemberAttrSet
	case r.DowngradeInfoSet != nil:
		return OpDowngradeInfoSet
	}
	return OpUnknown
}
