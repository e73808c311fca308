package mvcc

import (
	"sync/atomic"
	"time"
)

// OpenReads is the number of read views in use: ReadTxns between Read and
// End and PinnedViews between ReadPinned and End (etcd's
// etcd_mvcc_db_open_read_transactions). Idle pooled views are not counted.
func (s *Store) OpenReads() int64 { return s.stats.openReads.Load() }

// CompactionObserver is told about compactions as they run, on the
// compactor's goroutine: Step after each step's commit, with how long the
// step held the store's write lock (writers wait that long) and the
// versions it deleted; Done when a compaction through a revision
// completed, with its whole duration.
type CompactionObserver interface {
	CompactionStep(pause time.Duration, versions int)
	CompactionDone(took time.Duration)
}

// SetCompactionObserver installs o (etcd's etcd_debugging_mvcc_db_compaction_*
// series are fed from it).
func (s *Store) SetCompactionObserver(o CompactionObserver) { s.stats.compaction.Store(&o) }

// storeStats are counts kept beside the store's work for metrics.
type storeStats struct {
	openReads  atomic.Int64
	compaction atomic.Pointer[CompactionObserver]
}

func (st *storeStats) compactionObserver() CompactionObserver {
	if o := st.compaction.Load(); o != nil {
		return *o
	}
	return nil
}
