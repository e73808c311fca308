package etcdformat

import (
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"go.etcd.io/etcd/api/v3/authpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

type rec struct {
	Main, Sub int64
	Tomb      bool
	KV        mvccpb.KeyValue
}

// writeSample builds a database with versions, leases and auth, and
// returns its path and what was written.
func writeSample(t testing.TB, dir string) (string, []rec) {
	t.Helper()
	path := filepath.Join(dir, "db")
	w, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	var want []rec
	// Written out of order: the bucket must come back in revision order.
	for i := int64(20000); i >= 2; i-- {
		r := rec{Main: i, Sub: i % 3, KV: mvccpb.KeyValue{Key: []byte{byte(i), byte(i >> 8), 0}, Value: []byte("v"), CreateRevision: 2, ModRevision: i, Version: i - 1, Lease: i % 5}}
		if i%7 == 0 {
			r.Tomb = true
			r.KV = mvccpb.KeyValue{Key: r.KV.Key}
		}
		if err := w.PutVersion(r.Main, r.Sub, r.Tomb, &r.KV); err != nil {
			t.Fatal(err)
		}
		want = append(want, r)
	}
	slices.Reverse(want)
	must(t, w.PutLease(Lease{ID: 7, TTL: 30, RemainingTTL: 12}))
	must(t, w.PutLease(Lease{ID: -1, TTL: 5}))
	must(t, w.PutUser(&authpb.User{Name: []byte("root"), Password: []byte("$2a$hash"), Roles: []string{"root"}}))
	must(t, w.PutRole(&authpb.Role{Name: []byte("r"), KeyPermission: []*authpb.Permission{{PermType: authpb.READ, Key: []byte("a"), RangeEnd: []byte("b")}}}))
	must(t, w.SetAuth(true, 42))
	must(t, w.SetCompact(9, 8))
	must(t, w.Close())
	return path, want
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// withTrailer copies db to a snapshot file with etcd's SHA-256 trailer.
func withTrailer(t testing.TB, db, out string) {
	b, err := os.ReadFile(db)
	must(t, err)
	sum := sha256.Sum256(b)
	must(t, os.WriteFile(out, append(b, sum[:]...), 0o600))
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	db, want := writeSample(t, dir)
	snap := filepath.Join(dir, "snap")
	withTrailer(t, db, snap)
	for _, tc := range []struct {
		file string
		skip bool
	}{{snap, false}, {snap, true}, {db, true}} {
		r, err := Open(tc.file, OpenOptions{SkipHashCheck: tc.skip, TempDir: dir})
		must(t, err)
		var got []rec
		must(t, r.ForEachVersion(func(v *Version) error {
			got = append(got, rec{Main: v.Main, Sub: v.Sub, Tomb: v.Tombstone, KV: *v.KV})
			return nil
		}))
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("versions differ: got %d, want %d", len(got), len(want))
		}
		var leases []Lease
		must(t, r.ForEachLease(func(l Lease) error { leases = append(leases, l); return nil }))
		if !reflect.DeepEqual(leases, []Lease{{ID: 7, TTL: 30, RemainingTTL: 12}, {ID: -1, TTL: 5}}) {
			t.Fatalf("leases %+v", leases)
		}
		a, err := r.Auth()
		must(t, err)
		if !a.Enabled || a.Revision != 42 || len(a.Users) != 1 || string(a.Users[0].Password) != "$2a$hash" || len(a.Roles) != 1 || string(a.Roles[0].KeyPermission[0].RangeEnd) != "b" {
			t.Fatalf("auth %+v", a)
		}
		m, err := r.Meta()
		must(t, err)
		if m.ScheduledCompact != 9 || m.FinishedCompact != 8 || !m.HasFinishedCompact || m.StorageVersion != StorageVersion {
			t.Fatalf("meta %+v", m)
		}
		must(t, r.Close())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 { // db and snap
		t.Fatalf("working copies left behind: %v", ents)
	}
}

func TestRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	db, _ := writeSample(t, dir)
	snap := filepath.Join(dir, "snap")
	withTrailer(t, db, snap)
	b, err := os.ReadFile(snap)
	must(t, err)

	flipped := append([]byte(nil), b...)
	flipped[len(flipped)/2] ^= 0xff
	garbage := make([]byte, 8192+32)
	for i := range garbage {
		garbage[i] = byte(i * 7)
	}
	cases := map[string]struct {
		data []byte
		skip bool
	}{
		"no trailer":         {b[:len(b)-32], false},
		"bit flip":           {flipped, false},
		"truncated":          {b[:len(b)/2+32], false},
		"truncated, no hash": {b[:4096*3], true},
		"garbage, skip hash": {garbage, true},
		"empty":              {nil, true},
	}
	for name, tc := range cases {
		f := filepath.Join(dir, "bad")
		must(t, os.WriteFile(f, tc.data, 0o600))
		r, err := Open(f, OpenOptions{SkipHashCheck: tc.skip, TempDir: dir})
		if err == nil {
			// A truncated file may still open; reading it must then fail.
			err = r.ForEachVersion(func(*Version) error { return nil })
			r.Close()
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err %v, want ErrInvalid", name, err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 3 {
		t.Fatalf("working copies left behind: %v", ents)
	}
}

func TestRevKey(t *testing.T) {
	k := AppendRevKey(nil, 5, 2, true)
	if len(k) != RevKeyLen+1 {
		t.Fatal(len(k))
	}
	m, s, tomb, err := ParseRevKey(k)
	if m != 5 || s != 2 || !tomb || err != nil {
		t.Fatal(m, s, tomb, err)
	}
	if _, _, _, err := ParseRevKey(k[:10]); !errors.Is(err, ErrBadRevKey) {
		t.Fatal(err)
	}
}
