package mvcc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"path/filepath"
	"testing"
)

func TestSnapshotRestore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(filepath.Join(dir, "db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	hashHistory(t, s, "v")
	compactAndWait(t, s, 10)
	want, _, err := s.HashKV(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}

	snap, err := s.Snapshot(filepath.Join(dir, "db", "snapshot.tmp"))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	n, err := snap.WriteTo(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != snap.Size() || n%512 != 0 {
		t.Fatalf("wrote %d, size %d", n, snap.Size())
	}
	if err := snap.Close(); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	file := append(buf.Bytes(), sum[:]...)

	// A flipped byte anywhere is refused.
	bad := bytes.Clone(file)
	bad[700] ^= 1
	if _, err := RestoreSnapshot(bytes.NewReader(bad), int64(len(bad)), filepath.Join(dir, "bad")); !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("corrupt snapshot: %v", err)
	}
	if _, err := RestoreSnapshot(bytes.NewReader(file[:len(file)-1]), int64(len(file)-1), filepath.Join(dir, "bad")); !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("truncated snapshot: %v", err)
	}

	rdir := filepath.Join(dir, "restored")
	rev, err := RestoreSnapshot(bytes.NewReader(file), int64(len(file)), rdir)
	if err != nil {
		t.Fatal(err)
	}
	if rev != s.Rev() {
		t.Fatalf("marker revision %d, store %d", rev, s.Rev())
	}
	if _, err := RestoreSnapshot(bytes.NewReader(file), int64(len(file)), rdir); err == nil {
		t.Fatal("restore into a non-empty directory must fail")
	}
	r, err := Open(rdir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, cur, err := r.HashKV(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got != want || cur != s.Rev() || r.CompactRev() != 10 {
		t.Fatalf("restored %+v at %d (compact %d), want %+v at %d", got, cur, r.CompactRev(), want, s.Rev())
	}
}
