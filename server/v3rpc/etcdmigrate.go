package v3rpc

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/metastore-dev/metastore/auth"
	"github.com/metastore-dev/metastore/etcdformat"
	"github.com/metastore-dev/metastore/mvcc"
	"github.com/metastore-dev/metastore/server/apply"
)

// Migration between metastore and etcd's database format (etcdformat): a
// snapshot saved from etcd (or etcd's member/snap/db) restored into a
// metastore data directory with its whole history, and the Snapshot RPC
// streaming an etcd database built from a consistent view of the store.

// RestoreOptions tune RestoreSnapshot.
type RestoreOptions struct {
	// SkipHashCheck accepts an etcd database without the SHA-256 trailer of a
	// saved snapshot (member/snap/db) and skips verifying one, as etcdutl's
	// --skip-hash-check.
	SkipHashCheck bool
	// BumpRevision raises the restored revision by this much and
	// MarkCompacted compacts at the raised revision, as etcdutl's
	// --bump-revision and --mark-compacted (for a restore from an older
	// snapshot: clients never see revisions go back, and watchers from
	// before are told to start over). etcdutl requires both or neither.
	BumpRevision  uint64
	MarkCompacted bool
	// Finish, if set, runs on the restored store before it is moved into
	// place (the member set of a restore into a new cluster): an error
	// leaves nothing behind, as any failed restore.
	Finish func(*mvcc.Store) error
}

func (o RestoreOptions) validate() error {
	if (o.BumpRevision > 0) != o.MarkCompacted {
		return errors.New("restore: --bump-revision and --mark-compacted go together (as etcdutl's)")
	}
	return nil
}

// isEtcdDB reports whether file starts like a bbolt database: either of
// its two meta pages (the second at 4 KiB, etcd's page size) will do, so a
// damaged first page is still reported as a damaged etcd database.
func isEtcdDB(file string) (bool, error) {
	f, err := os.Open(file)
	if err != nil {
		return false, err
	}
	defer f.Close()
	head := make([]byte, 4096+64)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	return etcdformat.LooksLikeBolt(head) || len(head) > 4096 && etcdformat.LooksLikeBolt(head[4096:]), nil
}

// restoreEtcd restores an etcd database file into dataDir (which must not
// exist or be empty): every version with its revisions, the compaction,
// leases with their TTLs (attached keys follow from the versions' leases),
// and auth. The member starts a new one-member cluster, as after etcdutl's
// restore. Alarms are dropped: they were about the old member's disk
// (etcdutl keeps them, keyed to a member id that no longer exists). Everything is built in a temporary
// directory beside dataDir and renamed into place at the end, so a refused
// or failed restore leaves nothing behind.
func restoreEtcd(file, dataDir string, opts RestoreOptions) (rev int64, err error) {
	if err := opts.validate(); err != nil {
		return 0, err
	}
	// An existing (empty) dataDir may be a mount point: the restore is
	// staged inside it, on its file system, and its files moved up at the
	// end. Otherwise it is staged beside it and renamed into place at once.
	exists := false
	if ents, err := os.ReadDir(dataDir); err == nil {
		if len(ents) > 0 {
			return 0, fmt.Errorf("restore: %s is not empty", dataDir)
		}
		exists = true
	}
	parent := filepath.Dir(filepath.Clean(dataDir))
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return 0, err
	}
	stageIn, prefix := parent, "."+filepath.Base(dataDir)+".restore-"
	if exists {
		stageIn, prefix = dataDir, ".restore-"
	}
	tmp, err := os.MkdirTemp(stageIn, prefix)
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(tmp)

	r, err := etcdformat.Open(file, etcdformat.OpenOptions{SkipHashCheck: opts.SkipHashCheck, TempDir: tmp})
	if err != nil {
		return 0, err
	}
	defer r.Close()
	staged := filepath.Join(tmp, "data")
	store, err := mvcc.Open(staged, mvcc.Options{})
	if err != nil {
		return 0, err
	}
	rev, err = importEtcd(r, store, opts)
	if cerr := store.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, err
	}
	if exists {
		return rev, moveInto(staged, dataDir)
	}
	if err := os.Rename(staged, dataDir); err != nil {
		return 0, err
	}
	return rev, syncDir(parent)
}

// moveInto moves the files of a staged store into dir, Pebble's marker
// files (which name the current manifest) last, so a store is only there
// once all its files are.
func moveInto(staged, dir string) error {
	ents, err := os.ReadDir(staged)
	if err != nil {
		return err
	}
	sort.SliceStable(ents, func(i, j int) bool {
		return !strings.HasPrefix(ents[i].Name(), "marker.") && strings.HasPrefix(ents[j].Name(), "marker.")
	})
	for i, e := range ents {
		if err := os.Rename(filepath.Join(staged, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			for _, moved := range ents[:i] { // leave dir empty, as it was
				os.Remove(filepath.Join(dir, moved.Name()))
			}
			return err
		}
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// importEtcd copies r's history, leases and auth into the empty store.
func importEtcd(r *etcdformat.Reader, store *mvcc.Store, opts RestoreOptions) (int64, error) {
	meta, err := r.Meta()
	if err != nil {
		return 0, err
	}
	done, scheduled := int64(-1), int64(-1)
	if meta.HasFinishedCompact {
		done = meta.FinishedCompact
	}
	if meta.HasScheduledCompact {
		scheduled = meta.ScheduledCompact
	}
	im, err := store.Import(done, scheduled)
	if err != nil {
		return 0, err
	}
	defer im.Abort()
	err = r.ForEachVersion(func(v *etcdformat.Version) error {
		if v.KV == nil {
			im.MarkRev(v.Main) // etcdutl's --bump-revision marker
			return nil
		}
		kv := v.KV
		if !v.Tombstone && kv.ModRevision != v.Main {
			return fmt.Errorf("%w: revision %d_%d holds a key-value with mod_revision %d", etcdformat.ErrInvalid, v.Main, v.Sub, kv.ModRevision)
		}
		return im.Put(kv.Key, v.Main, v.Sub, v.Tombstone, kv.CreateRevision, kv.Version, kv.Lease, kv.Value)
	})
	if err != nil {
		return 0, err
	}
	err = r.ForEachLease(func(l etcdformat.Lease) error {
		rem := l.RemainingTTL
		if rem <= 0 || rem >= l.TTL {
			rem = 0 // not checkpointed: the full TTL, as etcd's lessor
		}
		return im.SetLease(l.ID, apply.EncodeLeaseRecord(l.TTL, rem))
	})
	if err != nil {
		return 0, err
	}
	a, err := r.Auth()
	if err != nil {
		return 0, err
	}
	st := &auth.State{Enabled: a.Enabled, Revision: max(a.Revision, 1), Users: a.Users, Roles: a.Roles}
	if err := auth.WriteState(importMetaWriter{im}, st); err != nil {
		return 0, err
	}
	if opts.BumpRevision > 0 {
		bumped := im.Rev() + int64(opts.BumpRevision)
		im.MarkRev(bumped)
		im.ScheduleCompaction(bumped)
	}
	if err := im.Finish(0); err != nil {
		return 0, err
	}
	if err := writeIDs(store, newMemberIDs()); err != nil {
		return 0, err
	}
	if opts.Finish != nil {
		if err := opts.Finish(store); err != nil {
			return 0, err
		}
	}
	return store.Rev(), nil
}

// importMetaWriter persists auth state through an import.
type importMetaWriter struct{ im *mvcc.Importer }

func (w importMetaWriter) Put(key string, value []byte) error { return w.im.SetMeta(key, value) }
func (w importMetaWriter) Delete(key string) error {
	return fmt.Errorf("restore: unexpected delete of %q in an empty store", key)
}

// exportMetaReader reads auth state from an export view.
type exportMetaReader struct{ e *mvcc.ExportView }

func (r exportMetaReader) Get(key string) ([]byte, error) { return r.e.Meta(key) }
func (r exportMetaReader) Scan(prefix string, fn func(string, []byte) error) error {
	return r.e.ScanMeta(prefix, fn)
}

var (
	_ auth.Writer = importMetaWriter{}
	_ auth.Reader = exportMetaReader{}
)

// WriteEtcdDB writes an etcd database holding store's history (every version
// reads at or above the compacted revision can see), its compaction, leases
// and auth, taken from one consistent view, to path (which must not exist).
// It returns the revision written.
func WriteEtcdDB(ctx context.Context, store *mvcc.Store, path string) (rev int64, err error) {
	e, err := store.Export()
	if err != nil {
		return 0, err
	}
	defer e.Close()
	w, err := etcdformat.Create(path)
	if err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			w.Abort()
			os.Remove(path)
		}
	}()
	err = e.Versions(ctx, func(kv *mvccpb.KeyValue, sub int64, tombstone bool) error {
		return w.PutVersion(kv.ModRevision, sub, tombstone, kv)
	})
	if err != nil {
		return 0, err
	}
	err = e.Leases(func(id int64, rec []byte) error {
		ttl, rem, err := apply.DecodeLeaseRecord(rec)
		if err != nil {
			return fmt.Errorf("lease %016x: %w", id, err)
		}
		if rem < 0 {
			rem = 1 // expired here, not yet revoked: etcd expires it at once too
		}
		return w.PutLease(etcdformat.Lease{ID: id, TTL: ttl, RemainingTTL: rem})
	})
	if err != nil {
		return 0, err
	}
	st, err := auth.ReadState(exportMetaReader{e})
	if err != nil {
		return 0, err
	}
	for _, u := range st.Users {
		if err := w.PutUser(u); err != nil {
			return 0, err
		}
	}
	for _, ro := range st.Roles {
		if err := w.PutRole(ro); err != nil {
			return 0, err
		}
	}
	if err := w.SetAuth(st.Enabled, st.Revision); err != nil {
		return 0, err
	}
	// NB: the compaction is complete as far as the view shows it (it holds
	// only what reads at or above it see), so finished = scheduled.
	if c := e.CompactRev(); c >= 0 {
		if err := w.SetCompact(c, c); err != nil {
			return 0, err
		}
	}
	if err := w.Close(); err != nil {
		return 0, err
	}
	return e.Rev(), nil
}

// etcdSnapshot is an etcd database file built for one Snapshot stream.
type etcdSnapshot struct {
	dir  string
	path string
	size int64
}

// newEtcdSnapshot builds the etcd database of store in dir (created, and
// removed by Close).
func newEtcdSnapshot(ctx context.Context, store *mvcc.Store, dir string) (*etcdSnapshot, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	s := &etcdSnapshot{dir: dir, path: filepath.Join(dir, "db")}
	if _, err := WriteEtcdDB(ctx, store, s.path); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	st, err := os.Stat(s.path)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s.size = st.Size()
	return s, nil
}

// Size is the database's length, without the SHA-256 trailer.
func (s *etcdSnapshot) Size() int64 { return s.size }

// WriteTo writes the database (not the trailer) to w.
func (s *etcdSnapshot) WriteTo(w io.Writer) (int64, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return io.Copy(w, io.LimitReader(f, s.size))
}

// Close removes the file.
func (s *etcdSnapshot) Close() error { return os.RemoveAll(s.dir) }

// SaveEtcdSnapshot writes store as a snapshot file exactly as `etcdctl
// snapshot save` stores one: the etcd database followed by its SHA-256.
func SaveEtcdSnapshot(ctx context.Context, store *mvcc.Store, file string) (int64, error) {
	tmp := file + ".part"
	rev, err := WriteEtcdDB(ctx, store, tmp)
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp)
	b, err := os.OpenFile(tmp, os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return 0, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, b); err != nil {
		b.Close()
		return 0, err
	}
	if _, err := b.Write(h.Sum(nil)); err != nil {
		b.Close()
		return 0, err
	}
	if err := b.Sync(); err != nil {
		b.Close()
		return 0, err
	}
	if err := b.Close(); err != nil {
		return 0, err
	}
	return rev, os.Rename(tmp, file)
}
