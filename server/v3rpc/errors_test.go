package server

import (
	"fmt"
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
