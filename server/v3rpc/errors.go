package v3rpc

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/metastore-dev/metastore/auth"
	"github.com/metastore-dev/metastore/auth/wasmpolicy"
	"github.com/metastore-dev/metastore/lease"
	"github.com/metastore-dev/metastore/mvcc"
	"github.com/metastore-dev/metastore/server/apply"
	"github.com/metastore-dev/metastore/server/guard"
	"github.com/metastore-dev/metastore/wasmhost"
)

// Errors for writes after a disk write failed. etcd has no equivalent (it
// exits); metastore keeps serving reads and refuses writes until it is
// restarted (see RATIONALE.md, "Disk faults").
var (
	errStorageFailed = status.Error(codes.Unavailable, "etcdserver: storage failed; writes refused until restart")
	errStorageFull   = status.Error(codes.Unavailable, "etcdserver: storage failed: no space left on device; writes refused until restart")
)

// grpcErrors is the one table from domain errors to the exact rpctypes value
// etcd returns in the same situation. Clients compare code and message.
var grpcErrors = []struct {
	err  error
	grpc error
}{
	{mvcc.ErrCompacted, rpctypes.ErrGRPCCompacted},
	{mvcc.ErrFutureRev, rpctypes.ErrGRPCFutureRev},
	{syscall.ENOSPC, errStorageFull}, // before ErrFailed, which wraps it
	{mvcc.ErrFailed, errStorageFailed},
	{apply.ErrKeyNotFound, rpctypes.ErrGRPCKeyNotFound},
	{apply.ErrLeaseExist, rpctypes.ErrGRPCLeaseExist},
	{apply.ErrLeaseTTLTooLarge, rpctypes.ErrGRPCLeaseTTLTooLarge},
	{lease.ErrLeaseNotFound, rpctypes.ErrGRPCLeaseNotFound},
	{lease.ErrStopped, rpctypes.ErrGRPCStopped},
	{apply.ErrNoSpace, rpctypes.ErrGRPCNoSpace},
	{apply.ErrCorrupt, rpctypes.ErrGRPCCorrupt},
	{apply.ErrStopped, rpctypes.ErrGRPCStopped},
	{apply.ErrTimeout, rpctypes.ErrGRPCTimeout},
	{apply.ErrTimeoutLeaderFail, rpctypes.ErrGRPCTimeoutDueToLeaderFail},
	{auth.ErrRootUserNotExist, rpctypes.ErrGRPCRootUserNotExist},
	{auth.ErrRootRoleNotExist, rpctypes.ErrGRPCRootRoleNotExist},
	{auth.ErrUserAlreadyExist, rpctypes.ErrGRPCUserAlreadyExist},
	{auth.ErrUserEmpty, rpctypes.ErrGRPCUserEmpty},
	{auth.ErrUserNotFound, rpctypes.ErrGRPCUserNotFound},
	{auth.ErrRoleAlreadyExist, rpctypes.ErrGRPCRoleAlreadyExist},
	{auth.ErrRoleNotFound, rpctypes.ErrGRPCRoleNotFound},
	{auth.ErrRoleEmpty, rpctypes.ErrGRPCRoleEmpty},
	{auth.ErrAuthFailed, rpctypes.ErrGRPCAuthFailed},
	{auth.ErrPermissionNotGiven, rpctypes.ErrGRPCPermissionNotGiven},
	{auth.ErrPermissionDenied, rpctypes.ErrGRPCPermissionDenied},
	{auth.ErrRoleNotGranted, rpctypes.ErrGRPCRoleNotGranted},
	{auth.ErrPermissionNotGranted, rpctypes.ErrGRPCPermissionNotGranted},
	{auth.ErrAuthNotEnabled, rpctypes.ErrGRPCAuthNotEnabled},
	{auth.ErrInvalidAuthToken, rpctypes.ErrGRPCInvalidAuthToken},
	{auth.ErrInvalidAuthMgmt, rpctypes.ErrGRPCInvalidAuthMgmt},
	{auth.ErrAuthOldRevision, rpctypes.ErrGRPCAuthOldRevision},
	{apply.ErrIDRemoved, rpctypes.ErrGRPCMemberNotFound},
	{apply.ErrIDNotFound, rpctypes.ErrGRPCMemberNotFound},
	{apply.ErrIDExists, rpctypes.ErrGRPCMemberExist},
	{apply.ErrPeerURLExists, rpctypes.ErrGRPCPeerURLExist},
	{apply.ErrMemberNotLearner, rpctypes.ErrGRPCMemberNotLearner},
	{apply.ErrTooManyLearners, rpctypes.ErrGRPCTooManyLearners},
	// NB: etcd maps this one to rpctypes.ErrMemberNotEnoughStarted, the
	// client-side error value rather than its gRPC status, so gRPC sends it
	// as Unknown with the message.
	{errNotEnoughStartedMembers, status.Error(codes.Unknown, rpctypes.ErrMemberNotEnoughStarted.Error())},
	{errLearnerNotReady, rpctypes.ErrGRPCLearnerNotReady},
	{errUnhealthy, rpctypes.ErrGRPCUnhealthy},
	{errWrongDowngradeVersionFormat, rpctypes.ErrGRPCWrongDowngradeVersionFormat},
	{errInvalidDowngradeTargetVersion, rpctypes.ErrGRPCInvalidDowngradeTargetVersion},
	{errDowngradeInProcess, rpctypes.ErrGRPCDowngradeInProcess},
	{errNoInflightDowngrade, rpctypes.ErrGRPCNoInflightDowngrade},
	{guard.ErrTooManyRequests, rpctypes.ErrGRPCRequestTooManyRequests},
	{guard.ErrRequestTooLarge, rpctypes.ErrGRPCRequestTooLarge},
	{context.Canceled, rpctypes.ErrGRPCCanceled},
	{context.DeadlineExceeded, rpctypes.ErrGRPCDeadlineExceeded},
}

// toGRPCError maps an internal error to its wire form. Errors that are already
// gRPC statuses pass through.
func toGRPCError(err error) error {
	switch err {
	case nil:
		return nil
	case context.Canceled:
		// NB: every stream a client cancels ends here (each KeepAliveOnce
		// does), and status.FromError and the table below cost 2.5 µs and
		// 5 allocations for a plain error (BenchmarkToGRPCErrorCanceled).
		return rpctypes.ErrGRPCCanceled
	case context.DeadlineExceeded:
		return rpctypes.ErrGRPCDeadlineExceeded
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	if g, ok := policyDenial(err); ok {
		return g
	}
	if q := (*guard.QuotaError)(nil); errors.As(err, &q) {
		// ResourceExhausted, as etcd's own space quota, naming the tenant.
		return status.Error(codes.ResourceExhausted, q.Error())
	}
	for _, e := range grpcErrors {
		if errors.Is(err, e.err) {
			return e.grpc
		}
	}
	if g, ok := raftError(err); ok {
		return g
	}
	return status.Error(codes.Unknown, err.Error())
}

// policyDenial maps a policy's denial to the wire: an authorization denial
// is etcd's permission-denied code with the policy's reason appended to
// etcd's message; an admission denial is FailedPrecondition (the write is
// well-formed and permitted, but a rule refuses it).
func policyDenial(err error) (error, bool) {
	var de *wasmpolicy.DenyError
	if !errors.As(err, &de) {
		return nil, false
	}
	if de.Hook == wasmhost.HookAuthorize {
		return status.Error(codes.PermissionDenied, fmt.Sprintf("etcdserver: permission denied: policy %q: %s", de.Policy, de.Reason)), true
	}
	return status.Error(codes.FailedPrecondition, fmt.Sprintf("etcdserver: request rejected by policy %q: %s", de.Policy, de.Reason)), true
}

// watchCancelReason is the cancel_reason etcd sends for a watch refused by
// auth.
func watchCancelReason(err error) string {
	switch {
	case errors.Is(err, auth.ErrInvalidAuthToken):
		return rpctypes.ErrGRPCInvalidAuthToken.Error()
	case errors.Is(err, auth.ErrAuthOldRevision):
		return rpctypes.ErrGRPCAuthOldRevision.Error()
	case errors.Is(err, auth.ErrUserEmpty):
		return rpctypes.ErrGRPCUserEmpty.Error()
	default:
		return rpctypes.ErrGRPCPermissionDenied.Error()
	}
}
