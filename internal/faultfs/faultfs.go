package faultfs

import (
	"fmt"
	"sync/atomic"
	"syscall"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// FS is a crashable in-memory filesystem with switchable faults. The
// zero value is not usable; call New.
type FS struct {
	// Mem is the filesystem underneath, for CrashClone.
	Mem *vfs.MemFS
	// Full makes every write-type operation fail with ENOSPC.
	Full atomic.Bool
	// SyncFail makes every fsync fail with EIO.
	SyncFail atomic.Bool
	// Injected counts the faults returned.
	Injected atomic.Int64
}

// New returns an FS with no faults switched on.
func New() *FS { return &FS{Mem: vfs.NewCrashableMem()} }

// FS is the filesystem to open Pebble (or mvcc) on.
func (f *FS) FS() vfs.FS {
	return errorfs.Wrap(f.Mem, errorfs.InjectorFunc(func(op errorfs.Op) error {
		switch {
		case f.Full.Load() && op.Kind.ReadOrWrite() == errorfs.OpIsWrite && op.Kind != errorfs.OpFileClose && op.Kind != errorfs.OpRemove:
			f.Injected.Add(1)
			return &PathError{Op: op, Err: syscall.ENOSPC}
		case f.SyncFail.Load() && (op.Kind == errorfs.OpFileSync || op.Kind == errorfs.OpFileSyncData || op.Kind == errorfs.OpFileSyncTo):
			f.Injected.Add(1)
			return &PathError{Op: op, Err: syscall.EIO}
		}
		return nil
	}))
}

// PathError is what the OS returns: the errno wrapped with the file.
type PathError struct {
	Op  errorfs.Op
	Err error
}

func (e *PathError) Error() string { return fmt.Sprintf("%s: %v", e.Op.Path, e.Err) }
func (e *PathError) Unwrap() error { return e.Err }
