package mvcc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/metastore-dev/metastore/internal/faultfs"
)

// putN commits n single-put revisions of key and returns the last revision.
func putN(t *testing.T, s *Store, key string, n int) int64 {
	t.Helper()
	var rev int64
	for i := 0; i < n; i++ {
		b, err := s.NewBatch()
		if err != nil {
			t.Fatal(err)
		}
		tx := b.Txn()
		if rev, _, err = tx.Put([]byte(key), []byte(fmt.Sprintf("v%d", i)), 0); err != nil {
			t.Fatal(err)
		}
		tx.End()
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	return rev
}

// commitOne tries one put in a new batch, failing the test if it hangs.
func commitOne(t *testing.T, s *Store, key, value string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		b, err := s.NewBatch()
		if err != nil {
			done <- err
			return
		}
		tx := b.Txn()
		if _, _, err := tx.Put([]byte(key), []byte(value), 0); err != nil {
			b.Abort()
			done <- err
			return
		}
		tx.End()
		done <- b.Commit()
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("write did not return within 30s")
		return nil
	}
}

// checkHistory requires every revision 2..last of key to read back.
func checkHistory(t *testing.T, s *Store, key string, last int64) {
	t.Helper()
	for rev := int64(2); rev <= last; rev++ {
		rr, err := s.Range(context.Background(), []byte(key), nil, RangeOptions{Rev: rev})
		if err != nil {
			t.Fatalf("read %s at %d: %v", key, rev, err)
		}
		if len(rr.KVs) != 1 || rr.KVs[0].ModRevision != rev || string(rr.KVs[0].Value) != fmt.Sprintf("v%d", rev-2) {
			t.Fatalf("read %s at %d: %v", key, rev, rr.KVs)
		}
	}
}

// TestDiskFull: when the disk fills up, the write fails with an error that
// names ENOSPC, is never acknowledged, and the store refuses every later
// write (Pebble's WAL writer cannot continue after a failed write); reads
// keep working on what was committed. Once space returns, a restart brings
// the store back with everything committed and nothing corrupted, and
// writes work again.
func TestDiskFull(t *testing.T) {
	ff := faultfs.New()
	s, err := Open("db", Options{FS: ff.FS()})
	if err != nil {
		t.Fatal(err)
	}
	last := putN(t, s, "k", 50)

	ff.Full.Store(true)
	err = commitOne(t, s, "k", "lost")
	if !errors.Is(err, ErrFailed) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("commit on a full disk: %v, want ErrFailed wrapping ENOSPC", err)
	}
	if !strings.Contains(err.Error(), "no space left on device") {
		t.Errorf("error %q does not say the disk is full", err)
	}
	if s.Rev() != last {
		t.Fatalf("revision %d after a failed commit, want %d", s.Rev(), last)
	}
	// Reads keep working, at every committed revision.
	checkHistory(t, s, "k", last)
	// Further writes are refused, even once space is back: the WAL may have
	// a torn tail, so only a restart (which replays it) may write again.
	ff.Full.Store(false)
	if err := commitOne(t, s, "k", "after"); !errors.Is(err, ErrFailed) {
		t.Fatalf("write after a failed commit: %v, want ErrFailed", err)
	}
	checkHistory(t, s, "k", last)
	s.Close() // may report the failure again; the restart is what matters

	// Restart on what reached the disk.
	s, err = Open("db", Options{FS: ff.Mem.CrashClone(vfs.CrashCloneCfg{})})
	if err != nil {
		t.Fatalf("reopen after the disk filled up: %v", err)
	}
	defer s.Close()
	if s.Rev() != last {
		t.Fatalf("revision %d after restart, want %d (the failed write must not appear)", s.Rev(), last)
	}
	checkHistory(t, s, "k", last)
	if err := commitOne(t, s, "k", fmt.Sprintf("v%d", last-1)); err != nil {
		t.Fatalf("write after restart: %v", err)
	}
	checkHistory(t, s, "k", last+1)
}

// TestFsyncError follows Pebble's guidance for a failed fsync: the data's
// fate is unknown, so the write is not acknowledged and nothing is written
// again in this process (the WAL is never synced again, even once the
// device recovers); reads keep working, background compaction stops
// committing, Close returns, and after a crash and restart every
// acknowledged revision is there.
func TestFsyncError(t *testing.T) {
	ff := faultfs.New()
	s, err := Open("db", Options{FS: ff.FS(), CompactionBatch: 5})
	if err != nil {
		t.Fatal(err)
	}
	last := putN(t, s, "k", 200)
	// A compaction with many small steps runs in the background meanwhile.
	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Compact(last / 2); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}

	ff.SyncFail.Store(true)
	err = commitOne(t, s, "k", "unacknowledged")
	if !errors.Is(err, ErrFailed) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("commit with a failing fsync: %v, want ErrFailed wrapping EIO", err)
	}
	if s.Rev() != last {
		t.Fatalf("revision %d after a failed commit, want %d", s.Rev(), last)
	}
	ff.SyncFail.Store(false)
	if err := commitOne(t, s, "k", "again"); !errors.Is(err, ErrFailed) {
		t.Fatalf("write after a failed fsync: %v, want ErrFailed", err)
	}
	if !errors.Is(s.Failed(), syscall.EIO) {
		t.Fatalf("Failed() = %v, want the fsync error", s.Failed())
	}
	rr, err := s.Range(context.Background(), []byte("k"), nil, RangeOptions{})
	if err != nil || len(rr.KVs) != 1 || rr.KVs[0].ModRevision != last {
		t.Fatalf("read after the failure: %v %v", rr, err)
	}
	closed := make(chan struct{})
	go func() {
		s.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close hung after a failed fsync")
	}

	s, err = Open("db", Options{FS: ff.Mem.CrashClone(vfs.CrashCloneCfg{})})
	if err != nil {
		t.Fatalf("reopen after the crash: %v", err)
	}
	defer s.Close()
	if s.Rev() != last {
		t.Fatalf("revision %d after restart, want %d", s.Rev(), last)
	}
	rr, err = s.Range(context.Background(), []byte("k"), nil, RangeOptions{})
	if err != nil || len(rr.KVs) != 1 || rr.KVs[0].ModRevision != last || string(rr.KVs[0].Value) != fmt.Sprintf("v%d", last-2) {
		t.Fatalf("latest after restart: %v %v", rr, err)
	}
	if err := commitOne(t, s, "k", "after restart"); err != nil {
		t.Fatalf("write after restart: %v", err)
	}
}

// TestDiskFullDuringCompaction: a full disk met by a background compaction
// step stops the store the same way, and the next write is refused rather
// than hanging in Pebble's commit pipeline.
func TestDiskFullDuringCompaction(t *testing.T) {
	ff := faultfs.New()
	s, err := Open("db", Options{FS: ff.FS(), CompactionBatch: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	last := putN(t, s, "k", 300)
	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	done, err := b.Compact(last)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	ff.Full.Store(true)
	select {
	case <-done:
		// The compaction finished before the disk filled; the next write
		// meets the full disk instead.
	case <-time.After(200 * time.Millisecond):
	}
	err = commitOne(t, s, "k", "x")
	if !errors.Is(err, ErrFailed) {
		t.Fatalf("write on a full disk: %v, want ErrFailed", err)
	}
	if rr, err := s.Range(context.Background(), []byte("k"), nil, RangeOptions{}); err != nil || len(rr.KVs) != 1 || rr.KVs[0].ModRevision != last {
		t.Fatalf("read on a full disk: %v %v", rr, err)
	}
}
