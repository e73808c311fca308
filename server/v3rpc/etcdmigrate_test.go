package v3rpc

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/authpb"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/metastore-dev/metastore/auth"
	"github.com/metastore-dev/metastore/etcdformat"
	"github.com/metastore-dev/metastore/mvcc"
	"github.com/metastore-dev/metastore/server/apply"
)

type batchMetaWriter struct{ b *mvcc.Batch }

func (w batchMetaWriter) Put(k string, v []byte) error { return w.b.SetMeta(k, v) }
func (w batchMetaWriter) Delete(k string) error        { return w.b.DeleteMeta(k) }

// buildHistory writes a history with multi-key revisions, overwrites,
// deletes, leases, a compaction and auth state into a new store.
func buildHistory(t *testing.T, dir string) *mvcc.Store {
	t.Helper()
	s, err := mvcc.Open(dir, mvcc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	step := func(f func(b *mvcc.Batch, tx *mvcc.WriteTxn) error) {
		b, err := s.NewBatch()
		if err != nil {
			t.Fatal(err)
		}
		tx := b.Txn()
		if err := f(b, tx); err != nil {
			t.Fatal(err)
		}
		tx.End()
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	step(func(b *mvcc.Batch, _ *mvcc.WriteTxn) error {
		if err := b.SetLease(7, apply.EncodeLeaseRecord(60, 0)); err != nil {
			return err
		}
		if err := b.SetLease(-3, apply.EncodeLeaseRecord(30, 12)); err != nil {
			return err
		}
		return auth.WriteState(batchMetaWriter{b}, &auth.State{Enabled: true, Revision: 9,
			Users: []*authpb.User{{Name: []byte("root"), Password: []byte("$2a$10$hash"), Roles: []string{"root"}},
				{Name: []byte("nopw"), Roles: []string{"a", "b"}, Options: &authpb.UserAddOptions{NoPassword: true}}},
			Roles: []*authpb.Role{{Name: []byte("root")}, {Name: []byte("a"), KeyPermission: []*authpb.Permission{{PermType: authpb.READWRITE, Key: []byte("k"), RangeEnd: []byte("l")}}}},
		})
	})
	for i := range 60 {
		step(func(_ *mvcc.Batch, tx *mvcc.WriteTxn) error {
			k := []byte(fmt.Sprintf("k%d\x00", i%9))
			switch {
			case i%7 == 6:
				_, err := tx.DeleteRange([]byte("k"), []byte(fmt.Sprintf("k%d", i%4)))
				return err
			case i%5 == 4:
				for j := range 3 {
					if _, _, err := tx.Put([]byte(fmt.Sprintf("m%d", j)), []byte(fmt.Sprint(i)), 0); err != nil {
						return err
					}
				}
				return nil
			default:
				lease := []int64{0, 7, -3}[i%3]
				_, _, err := tx.Put(k, []byte(fmt.Sprintf("v%d", i)), lease)
				return err
			}
		})
		if i == 40 {
			b, err := s.NewBatch()
			if err != nil {
				t.Fatal(err)
			}
			done, err := b.Compact(b.Rev() - 8)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Commit(); err != nil {
				t.Fatal(err)
			}
			<-done
		}
	}
	return s
}

type exportedVersion struct {
	KV   mvccpb.KeyValue
	Sub  int64
	Tomb bool
}

func exportAll(t *testing.T, s *mvcc.Store) (vs []exportedVersion, leases map[int64][2]int64, st *auth.State, rev, compact int64) {
	t.Helper()
	e, err := s.Export()
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	err = e.Versions(context.Background(), func(kv *mvccpb.KeyValue, sub int64, tomb bool) error {
		c := *kv
		c.Key = append([]byte(nil), kv.Key...)
		c.Value = append([]byte(nil), kv.Value...)
		vs = append(vs, exportedVersion{c, sub, tomb})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	leases = map[int64][2]int64{}
	err = e.Leases(func(id int64, rec []byte) error {
		ttl, rem, err := apply.DecodeLeaseRecord(rec)
		leases[id] = [2]int64{ttl, rem}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	st, err = auth.ReadState(exportMetaReader{e})
	if err != nil {
		t.Fatal(err)
	}
	return vs, leases, st, e.Rev(), e.CompactRev()
}

// etcdHashKV is etcd's hashByRev over the key bucket of an etcd database,
// written out literally (see mvcc's physicalHashKV): an independent check of
// mvcc.Store.HashKV.
func etcdHashKV(t *testing.T, file string, rev, compact int64) uint32 {
	r, err := etcdformat.Open(file, etcdformat.OpenOptions{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	type ent struct {
		v   etcdformat.Version
		raw []byte
	}
	var all []ent
	newest := map[string]ent{} // newest version <= rev per key
	err = r.ForEachVersion(func(v *etcdformat.Version) error {
		raw, err := etcdformat.MarshalKV(nil, v.Tombstone, v.KV)
		if err != nil {
			return err
		}
		e := ent{*v, raw}
		e.v.KV = &mvccpb.KeyValue{}
		*e.v.KV = *v.KV
		all = append(all, e)
		if v.Main <= rev {
			newest[string(v.KV.Key)] = e
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	keep := map[[2]int64]bool{}
	for _, e := range newest {
		if !e.v.Tombstone {
			keep[[2]int64{e.v.Main, e.v.Sub}] = true
		}
	}
	h := etcdformat.NewKVHasher()
	for _, e := range all {
		switch {
		case e.v.Main > rev:
		case e.v.Main <= compact && len(keep) > 0 && !keep[[2]int64{e.v.Main, e.v.Sub}]:
		case e.v.Main == compact && e.v.Tombstone:
		default:
			h.Write(e.v.Main, e.v.Sub, e.v.Tombstone, e.raw)
		}
	}
	return h.Sum32()
}

func TestEtcdRoundTrip(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := buildHistory(t, filepath.Join(dir, "src"))
	defer src.Close()
	wantV, wantL, wantA, wantRev, wantCompact := exportAll(t, src)

	snap := filepath.Join(dir, "snap.db")
	rev, err := SaveEtcdSnapshot(ctx, src, snap)
	if err != nil {
		t.Fatal(err)
	}
	if rev != src.Rev() {
		t.Fatalf("snapshot at %d, store at %d", rev, src.Rev())
	}
	st, _ := os.Stat(snap)
	if !etcdformat.HasTrailer(st.Size()) {
		t.Fatalf("size %d is not 512·n + 32", st.Size())
	}

	dst := filepath.Join(dir, "dst")
	got, err := RestoreSnapshot(snap, dst, RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got != wantRev {
		t.Fatalf("restored at %d, want %d", got, wantRev)
	}
	s2, err := mvcc.Open(dst, mvcc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	gotV, gotL, gotA, gotRev, gotCompact := exportAll(t, s2)
	if !reflect.DeepEqual(gotV, wantV) {
		t.Fatalf("versions differ:\n got %v\nwant %v", gotV, wantV)
	}
	if !reflect.DeepEqual(gotL, wantL) || !reflect.DeepEqual(gotA, wantA) || gotRev != wantRev || gotCompact != wantCompact {
		t.Fatalf("state differs: leases %v/%v auth %v/%v rev %d/%d compact %d/%d", gotL, wantL, gotA, wantA, gotRev, wantRev, gotCompact, wantCompact)
	}
	// Every revision: the same history reads and hashes the same, and the
	// hash is etcd's over the exported database.
	for r := wantCompact; r <= wantRev; r++ {
		h2, _, err := s2.HashKV(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		if e := etcdHashKV(t, snap, r, wantCompact); e != h2.Hash {
			t.Fatalf("rev %d: HashKV %d, etcd's algorithm over the file %d", r, h2.Hash, e)
		}
		// The source answers its compaction revision from the hash it took
		// while compacting, as etcd; a restored store has none.
		if h1, _, err := src.HashKV(ctx, r); err != nil || (r != wantCompact && h1 != h2) {
			t.Fatalf("rev %d: HashKV %+v after restore, %+v before (%v)", r, h2, h1, err)
		}
		a, err := src.Range(ctx, []byte{0}, []byte{}, mvcc.RangeOptions{Rev: r})
		if err != nil {
			t.Fatal(err)
		}
		b, err := s2.Range(ctx, []byte{0}, []byte{}, mvcc.RangeOptions{Rev: r})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a.KVs, b.KVs) {
			t.Fatalf("rev %d: range differs", r)
		}
	}
	// Lease attachments follow the newest versions.
	for _, id := range []int64{7, -3} {
		rt1, _ := src.Read()
		k1, err := rt1.LeaseKeys(id)
		rt1.End()
		if err != nil {
			t.Fatal(err)
		}
		rt2, _ := s2.Read()
		k2, err := rt2.LeaseKeys(id)
		rt2.End()
		if err != nil {
			t.Fatal(err)
		}
		if len(k1) == 0 || !reflect.DeepEqual(k1, k2) {
			t.Fatalf("lease %d keys %q, restored %q", id, k1, k2)
		}
	}
	// The restore is a second-generation source too.
	snap2 := filepath.Join(dir, "snap2.db")
	if _, err := SaveEtcdSnapshot(ctx, s2, snap2); err != nil {
		t.Fatal(err)
	}
	if !sameVersions(t, snap, snap2) {
		t.Fatal("snapshot of the restored store holds different versions")
	}
}

func sameVersions(t *testing.T, a, b string) bool {
	read := func(f string) []string {
		r, err := etcdformat.Open(f, etcdformat.OpenOptions{TempDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		var out []string
		r.ForEachVersion(func(v *etcdformat.Version) error {
			out = append(out, fmt.Sprintf("%d_%d %v %v", v.Main, v.Sub, v.Tombstone, v.KV))
			return nil
		})
		sort.Strings(out)
		return out
	}
	return reflect.DeepEqual(read(a), read(b))
}

func TestEtcdRestoreRefusesDamage(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := buildHistory(t, filepath.Join(dir, "src"))
	defer src.Close()
	snap := filepath.Join(dir, "snap.db")
	if _, err := SaveEtcdSnapshot(ctx, src, snap); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(snap)
	if err != nil {
		t.Fatal(err)
	}
	flip := append([]byte(nil), good...)
	flip[len(flip)/2] ^= 1
	body := good[:len(good)-sha256.Size]
	cut := body[:len(body)/2/4096*4096]
	sum := sha256.Sum256(cut)
	cases := map[string]struct {
		data []byte
		skip bool
	}{
		"bit flip":                 {flip, false},
		"truncated":                {good[:len(good)-100], false},
		"no trailer":               {body, false},
		"truncated, rehashed":      {append(append([]byte(nil), cut...), sum[:]...), false},
		"truncated, skip the hash": {cut, true},
	}
	for name, tc := range cases {
		f := filepath.Join(dir, "bad")
		if err := os.WriteFile(f, tc.data, 0o600); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "out")
		if _, err := RestoreSnapshot(f, out, RestoreOptions{SkipHashCheck: tc.skip}); err == nil {
			t.Errorf("%s: restored", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
		if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %s left behind (%v)", name, out, err)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 3 { // src, snap.db, bad
		t.Fatalf("leftovers: %v", ents)
	}
	// An existing empty directory (a mount point, say) stays, empty.
	mount := filepath.Join(dir, "mount")
	if err := os.Mkdir(mount, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bad"), cut, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := RestoreSnapshot(filepath.Join(dir, "bad"), mount, RestoreOptions{SkipHashCheck: true}); err == nil {
		t.Fatal("restored a damaged file")
	}
	if ents, err := os.ReadDir(mount); err != nil || len(ents) != 0 {
		t.Fatalf("the existing directory after a refused restore: %v %v", ents, err)
	}
	if _, err := RestoreSnapshot(snap, mount, RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	ents, _ = os.ReadDir(mount)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".restore-") {
			t.Fatalf("staging left in %s: %v", mount, ents)
		}
	}
	s3, err := mvcc.Open(mount, mvcc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s3.Rev() != src.Rev() {
		t.Fatalf("restored into an existing directory at %d, want %d", s3.Rev(), src.Rev())
	}
	s3.Close()
	// member/snap/db: no trailer, accepted with SkipHashCheck.
	if err := os.WriteFile(filepath.Join(dir, "db"), body, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := RestoreSnapshot(filepath.Join(dir, "db"), filepath.Join(dir, "ok"), RestoreOptions{SkipHashCheck: true}); err != nil {
		t.Fatal(err)
	}
}

// TestRestoreEarlierFormat: snapshots of metastore's earlier format (a tar
// of a Pebble checkpoint with a SHA-256 trailer) still restore.
func TestRestoreEarlierFormat(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := buildHistory(t, filepath.Join(dir, "src"))
	defer src.Close()
	want, _, _, rev, compact := exportAll(t, src)
	snap, err := src.Snapshot(filepath.Join(dir, "ckpt"))
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	f, err := os.Create(filepath.Join(dir, "old.snap"))
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := snap.WriteTo(io.MultiWriter(f, h)); err != nil {
		t.Fatal(err)
	}
	f.Write(h.Sum(nil))
	f.Close()
	got, err := RestoreSnapshot(f.Name(), filepath.Join(dir, "dst"), RestoreOptions{})
	if err != nil || got != rev {
		t.Fatalf("restore of the earlier format: rev %d, %v", got, err)
	}
	s2, err := mvcc.Open(filepath.Join(dir, "dst"), mvcc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	gotV, _, _, _, gotCompact := exportAll(t, s2)
	if !reflect.DeepEqual(gotV, want) || gotCompact != compact {
		t.Fatal("earlier format: restored history differs")
	}
	if _, _, err := s2.HashKV(ctx, 0); err != nil {
		t.Fatal(err)
	}
}

// TestEtcdRestoreBumpRevision: --bump-revision with --mark-compacted raises
// the revision and compacts there, as etcdutl's; one without the other is
// refused.
func TestEtcdRestoreBumpRevision(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := buildHistory(t, filepath.Join(dir, "src"))
	defer src.Close()
	snap := filepath.Join(dir, "snap.db")
	rev, err := SaveEtcdSnapshot(ctx, src, snap)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := RestoreSnapshot(snap, filepath.Join(dir, "x"), RestoreOptions{BumpRevision: 5}); err == nil {
		t.Fatal("--bump-revision without --mark-compacted accepted")
	}
	got, err := RestoreSnapshot(snap, filepath.Join(dir, "dst"), RestoreOptions{BumpRevision: 1000, MarkCompacted: true})
	if err != nil || got != rev+1000 {
		t.Fatalf("bumped restore: rev %d (want %d), %v", got, rev+1000, err)
	}
	s2, err := mvcc.Open(filepath.Join(dir, "dst"), mvcc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.Rev() != rev+1000 || s2.CompactRev() != rev+1000 {
		t.Fatalf("rev %d compacted %d, want both %d", s2.Rev(), s2.CompactRev(), rev+1000)
	}
	if _, err := s2.Range(ctx, []byte("k"), []byte("l"), mvcc.RangeOptions{Rev: rev}); !errors.Is(err, mvcc.ErrCompacted) {
		t.Fatalf("read at the old revision: %v", err)
	}
	a, err := src.Range(ctx, []byte{0}, []byte{}, mvcc.RangeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s2.Range(ctx, []byte{0}, []byte{}, mvcc.RangeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a.KVs, b.KVs) {
		t.Fatal("latest keys differ after a bumped restore")
	}
}
