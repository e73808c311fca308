package mvcc

import (
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestCloseFlushesMemtable checks that a clean Close leaves nothing for the
// next Open to replay: Open flushes a replayed WAL before it returns, which
// is what made restarts slow.
func TestCloseFlushesMemtable(t *testing.T) {
	fs := vfs.NewMem()
	s, err := Open("db", Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	last := putN(t, s, "k", 200)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open("db", Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n := s.DB().Metrics().Levels[0].TablesFlushed; n != 0 {
		t.Errorf("Open flushed %d tables replayed from the WAL, want 0 after a clean Close", n)
	}
	if s.Rev() != last {
		t.Fatalf("revision after reopen %d, want %d", s.Rev(), last)
	}
	checkHistory(t, s, "k", last)
}
