package v3rpc

import (
	"context"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/metastore-dev/metastore/auth"
	"syscall"
	"testing"

	"github.com/metastore-dev/metastore/mvcc"
)

// A write refused after a disk failure says why on the wire.
func TestStorageFailureErrors(t *testing.T) {
	full := fmt.Errorf("%w: %w", mvcc.ErrFailed, fmt.Errorf("write db/000002.log: %w", syscall.ENOSPC))
	if got := toGRPCError(full); got != errStorageFull {
		t.Errorf("full disk: %v, want %v", got, errStorageFull)
	}
	eio := fmt.Errorf("%w: %w", mvcc.ErrFailed, syscall.EIO)
	if got := toGRPCError(eio); got != errStorageFailed {
		t.Errorf("fsync error: %v, want %v", got, errStorageFailed)
	}
}

func TestWatchCancelReason(t *testing.T) {
	for err, want := range map[error]error{
		auth.ErrInvalidAuthToken: rpctypes.ErrGRPCInvalidAuthToken,
		auth.ErrAuthOldRevision:  rpctypes.ErrGRPCAuthOldRevision,
		auth.ErrUserEmpty:        rpctypes.ErrGRPCUserEmpty,
		auth.ErrPermissionDenied: rpctypes.ErrGRPCPermissionDenied,
	} {
		if got := watchCancelReason(err); got != want.Error() {
			t.Errorf("watchCancelReason(%v) = %q, want %q", err, got, want.Error())
		}
	}
}

// BenchmarkToGRPCErrorCanceled: how every canceled stream (each
// KeepAliveOnce) ends.
func BenchmarkToGRPCErrorCanceled(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if toGRPCError(context.Canceled) != rpctypes.ErrGRPCCanceled {
			b.Fatal("wrong error")
		}
	}
}
