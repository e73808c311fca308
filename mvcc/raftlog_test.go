package mvcc

import (
	"context"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestRaftLogLeftOut: a Raft member's log keys (prefix 'R', in the same
// database) change neither Hash nor HashKV, and DeleteRaftLog removes them.
func TestRaftLogLeftOut(t *testing.T) {
	s, err := Open("db", Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	tx := b.Txn()
	if _, _, err := tx.Put([]byte("k"), []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	tx.End()
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	h1, _, err := s.Hash(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kv1, _, err := s.HashKV(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"Rh", "Re\x00\x00\x00\x00\x00\x00\x00\x01", "Rt"} {
		if err := s.DB().Set([]byte(k), []byte("raft"), pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	h2, _, _ := s.Hash(ctx)
	kv2, _, _ := s.HashKV(ctx, 0)
	if h1 != h2 || kv1 != kv2 {
		t.Fatalf("Raft log keys changed the hashes: %x→%x, %v→%v", h1, h2, kv1, kv2)
	}
	b, err = s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteRaftLog(); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, closer, err := s.DB().Get([]byte("Rh")); err == nil {
		closer.Close()
		t.Fatal("DeleteRaftLog left the hard state")
	}
}
