package raftnode

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/metastore-dev/metastore/internal/faultfs"
	"github.com/metastore-dev/metastore/mvcc"
)

// TestLogStoreSaveReportsFailedSync: Pebble's Commit returns nil after a
// failed fsync (it tells only its logger, which mvcc.Store records), so a
// Save whose sync failed must still fail — a follower would otherwise
// acknowledge entries it does not hold — and every later write to the log
// must fail at once instead of entering Pebble's broken commit pipeline.
func TestLogStoreSaveReportsFailedSync(t *testing.T) {
	ff := faultfs.New()
	store, err := mvcc.Open("db", mvcc.Options{FS: ff.FS()})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ls, err := OpenLogStore(store.DB(), LogStoreOptions{Failed: store.Failed})
	if err != nil {
		t.Fatal(err)
	}
	ent := func(i uint64) []raftpb.Entry { return []raftpb.Entry{{Index: i, Term: 1, Data: []byte("x")}} }
	if err := ls.Save(raftpb.HardState{Term: 1, Commit: 1}, ent(1), true); err != nil {
		t.Fatal(err)
	}

	ff.SyncFail.Store(true)
	if err := ls.Save(raftpb.HardState{Term: 1, Commit: 1}, ent(2), true); !errors.Is(err, mvcc.ErrFailed) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("save with a failed fsync: %v, want mvcc.ErrFailed wrapping EIO", err)
	}
	ff.SyncFail.Store(false)

	// Every later write fails, promptly.
	writes := map[string]func() error{
		"save":    func() error { return ls.Save(raftpb.HardState{Term: 1, Commit: 1}, ent(2), true) },
		"compact": func() error { return ls.Compact(1) },
	}
	for name, write := range writes {
		done := make(chan error, 1)
		go func() { done <- write() }()
		select {
		case err := <-done:
			if !errors.Is(err, mvcc.ErrFailed) {
				t.Errorf("%s after the failure: %v, want mvcc.ErrFailed", name, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s after the failure did not return", name)
		}
	}
}
