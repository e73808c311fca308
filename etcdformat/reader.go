package etcdformat

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/authpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// ErrInvalid is returned (wrapped, with the cause) for a file that is not a
// readable etcd database: a bad or missing SHA-256 trailer, a truncated or
// corrupted bbolt file, a missing bucket, an undecodable record.
var ErrInvalid = errors.New("etcdformat: invalid etcd database")

// HasTrailer reports whether a file of size n ends with the SHA-256 trailer
// of a saved snapshot: bbolt files are whole pages, so a size of 512·k + 32
// can only come from one (etcdutl's test, too).
func HasTrailer(n int64) bool { return n%512 == sha256.Size }

// LooksLikeBolt reports whether head (the first bytes of a file) is a bbolt
// meta page: magic 0xED0CDAED at offset 16+0, little-endian on every
// platform etcd runs on.
func LooksLikeBolt(head []byte) bool {
	const metaOff = 16 // page header: id(8) flags(2) count(2) overflow(4)
	return len(head) >= metaOff+4 && binary.LittleEndian.Uint32(head[metaOff:]) == 0xED0CDAED
}

// OpenOptions configure Open.
type OpenOptions struct {
	// SkipHashCheck accepts a file without a SHA-256 trailer (etcd's
	// member/snap/db) and does not verify a trailer that is present, as
	// etcdutl's --skip-hash-check.
	SkipHashCheck bool
	// TempDir receives the working copy of the database; "" means
	// os.TempDir(). The copy is removed by Close.
	TempDir string
}

// Reader reads a verified, read-only copy of an etcd database.
type Reader struct {
	db  *bolt.DB
	dir string
}

// Open verifies file (its trailer, then bbolt's own consistency check) and
// opens a private copy of it for reading. A file without a trailer is
// refused unless SkipHashCheck is set, exactly as etcdutl's restore.
func Open(file string, opts OpenOptions) (r *Reader, err error) {
	src, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	hasHash := HasTrailer(size)
	if !hasHash && !opts.SkipHashCheck {
		return nil, fmt.Errorf("%w: snapshot missing hash but --skip-hash-check=false: the file is truncated, or it is a member/snap/db file (then pass --skip-hash-check)", ErrInvalid)
	}
	dbSize := size
	if hasHash {
		dbSize -= sha256.Size
	}
	if dbSize < 2*512 {
		return nil, fmt.Errorf("%w: file of %d bytes is too short (truncated?)", ErrInvalid, size)
	}
	dir, err := os.MkdirTemp(opts.TempDir, "etcd-db-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	path := filepath.Join(dir, "db")
	dst, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(dst, h), io.LimitReader(src, dbSize))
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("etcdformat: copy %s: %w", file, err)
	}
	if hasHash && !opts.SkipHashCheck {
		want := make([]byte, sha256.Size)
		if _, err := io.ReadFull(src, want); err != nil {
			return nil, fmt.Errorf("etcdformat: read trailer: %w", err)
		}
		if got := h.Sum(nil); !bytes.Equal(got, want) {
			return nil, fmt.Errorf("%w: expected sha256 %x, got %x (file corrupted or truncated)", ErrInvalid, want, got)
		}
	}
	if err := checkMeta(path, dbSize); err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	r = &Reader{db: db, dir: dir}
	if err := r.check(); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// Close closes and removes the working copy.
func (r *Reader) Close() error {
	err := r.db.Close()
	if rerr := os.RemoveAll(r.dir); err == nil {
		err = rerr
	}
	return err
}

// view runs f in a read transaction. bbolt trusts its pages: a corrupted
// one makes it panic or read outside the mapped file, so f runs on a
// goroutine of its own where both are recovered as ErrInvalid.
func (r *Reader) view(f func(tx *bolt.Tx) error) error {
	errc := make(chan error, 1)
	go func() {
		debug.SetPanicOnFault(true)
		defer func() {
			if p := recover(); p != nil {
				errc <- fmt.Errorf("%w: corrupted page: %v", ErrInvalid, p)
			}
		}()
		errc <- r.db.View(f)
	}()
	return <-errc
}

// check walks every bucket and record once, so corruption is found before
// anything is imported. (bbolt's Tx.Check runs on a goroutine of its own,
// where a corrupted page could not be recovered.)
func (r *Reader) check() error {
	return r.view(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{BucketKey, BucketMeta} {
			if tx.Bucket(b) == nil {
				return fmt.Errorf("%w: no %q bucket", ErrInvalid, b)
			}
		}
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return walkBucket(b)
		})
	})
}

func walkBucket(b *bolt.Bucket) error {
	return b.ForEach(func(k, v []byte) error {
		if v == nil {
			if nb := b.Bucket(k); nb != nil {
				return walkBucket(nb)
			}
		}
		return nil
	})
}

// checkMeta validates bbolt's two meta pages the way bbolt does (magic,
// version, FNV-64a checksum) and that the newest valid one describes a file
// no longer than the one given: a truncated file is refused here, before
// bbolt maps it and faults on the missing pages.
func checkMeta(path string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	type meta struct {
		pageSize       uint32
		root, freelist uint64
		hwm, txid      uint64
	}
	read := func(off int64) (meta, error) {
		var buf [16 + 64]byte
		if _, err := f.ReadAt(buf[:], off); err != nil {
			return meta{}, err
		}
		m := buf[16:]
		if !LooksLikeBolt(buf[:]) {
			return meta{}, errors.New("not a bbolt file (bad magic)")
		}
		if v := binary.LittleEndian.Uint32(m[4:]); v != 2 {
			return meta{}, fmt.Errorf("unsupported bbolt version %d", v)
		}
		h := fnv.New64a()
		h.Write(m[:56])
		if h.Sum64() != binary.LittleEndian.Uint64(m[56:]) {
			return meta{}, errors.New("meta page checksum mismatch")
		}
		return meta{
			pageSize: binary.LittleEndian.Uint32(m[8:]),
			root:     binary.LittleEndian.Uint64(m[16:]),
			freelist: binary.LittleEndian.Uint64(m[32:]),
			hwm:      binary.LittleEndian.Uint64(m[40:]),
			txid:     binary.LittleEndian.Uint64(m[48:]),
		}, nil
	}
	m0, err0 := read(0)
	ps := int64(m0.pageSize)
	if err0 != nil {
		ps = int64(os.Getpagesize()) // bbolt's fallback when page 0 is bad
	}
	m1, err1 := read(ps)
	best := m0
	switch {
	case err0 != nil && err1 != nil:
		return fmt.Errorf("%w: %v", ErrInvalid, err0)
	case err0 != nil || (err1 == nil && m1.txid > m0.txid):
		best = m1
	}
	ps = int64(best.pageSize)
	if ps < 512 || ps&(ps-1) != 0 {
		return fmt.Errorf("%w: bad page size %d", ErrInvalid, ps)
	}
	if int64(best.hwm)*ps > size {
		return fmt.Errorf("%w: file is %d bytes but its pages need %d (truncated)", ErrInvalid, size, int64(best.hwm)*ps)
	}
	if best.root >= best.hwm || (best.freelist >= best.hwm && best.freelist != ^uint64(0)) {
		return fmt.Errorf("%w: meta page points past the end of the file", ErrInvalid)
	}
	return nil
}

// Meta is what etcd keeps in its meta bucket about the key space.
type Meta struct {
	// ScheduledCompact and FinishedCompact are the revisions of the last
	// scheduled and the last completed compaction; 0 with the Has flag
	// false when never written.
	ScheduledCompact, FinishedCompact       int64
	HasScheduledCompact, HasFinishedCompact bool
	// ConsistentIndex and Term are the raft position the database reflects.
	ConsistentIndex, Term uint64
	// StorageVersion is etcd's storage schema version ("3.6"), "" before 3.6.
	StorageVersion string
}

// Meta reads the meta bucket.
func (r *Reader) Meta() (Meta, error) {
	var m Meta
	err := r.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(BucketMeta)
		var err error
		if m.ScheduledCompact, m.HasScheduledCompact, err = compactRev(b.Get(metaScheduledCompact)); err != nil {
			return err
		}
		if m.FinishedCompact, m.HasFinishedCompact, err = compactRev(b.Get(metaFinishedCompact)); err != nil {
			return err
		}
		if v := b.Get(metaConsistentIndex); len(v) == 8 {
			m.ConsistentIndex = binary.BigEndian.Uint64(v)
		}
		if v := b.Get(metaTerm); len(v) == 8 {
			m.Term = binary.BigEndian.Uint64(v)
		}
		m.StorageVersion = string(b.Get(metaStorageVersion))
		return nil
	})
	return m, err
}

func compactRev(v []byte) (int64, bool, error) {
	if v == nil {
		return 0, false, nil
	}
	main, _, _, err := ParseRevKey(v)
	if err != nil {
		return 0, false, fmt.Errorf("%w: compaction revision: %w", ErrInvalid, err)
	}
	return main, true, nil
}

// Version is one entry of the key bucket.
type Version struct {
	Main, Sub int64
	Tombstone bool
	// KV is the stored key-value; nil for a revision marker (the empty
	// value etcdutl's --bump-revision writes).
	KV *mvccpb.KeyValue
}

// ForEachVersion calls f with every entry of the key bucket in revision
// order. The Version is only valid during the call.
func (r *Reader) ForEachVersion(f func(v *Version) error) error {
	return r.view(func(tx *bolt.Tx) error {
		var v Version
		var kv mvccpb.KeyValue
		return tx.Bucket(BucketKey).ForEach(func(k, val []byte) error {
			main, sub, tomb, err := ParseRevKey(k)
			if err != nil {
				return fmt.Errorf("%w: %w", ErrInvalid, err)
			}
			v = Version{Main: main, Sub: sub, Tombstone: tomb}
			if len(val) > 0 {
				kv.Reset()
				if err := kv.Unmarshal(val); err != nil {
					return fmt.Errorf("%w: key-value at revision %d_%d: %w", ErrInvalid, main, sub, err)
				}
				v.KV = &kv
			}
			return f(&v)
		})
	})
}

// ForEachLease calls f with every stored lease, in id order.
func (r *Reader) ForEachLease(f func(l Lease) error) error {
	return r.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(BucketLease)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			l, err := UnmarshalLease(v)
			if err != nil {
				return fmt.Errorf("%w: lease %x: %w", ErrInvalid, k, err)
			}
			return f(l)
		})
	})
}

// Auth is etcd's persisted auth state.
type Auth struct {
	Enabled  bool
	Revision uint64
	Users    []*authpb.User
	Roles    []*authpb.Role
}

// Auth reads the auth buckets.
func (r *Reader) Auth() (*Auth, error) {
	a := &Auth{}
	err := r.view(func(tx *bolt.Tx) error {
		if b := tx.Bucket(BucketAuth); b != nil {
			a.Enabled = bytes.Equal(b.Get(authEnabledKey), []byte{1})
			if v := b.Get(authRevisionKey); len(v) == 8 {
				a.Revision = binary.BigEndian.Uint64(v)
			}
		}
		if b := tx.Bucket(BucketAuthUsers); b != nil {
			err := b.ForEach(func(k, v []byte) error {
				u := &authpb.User{}
				if err := u.Unmarshal(v); err != nil {
					return fmt.Errorf("%w: user %q: %w", ErrInvalid, k, err)
				}
				a.Users = append(a.Users, u)
				return nil
			})
			if err != nil {
				return err
			}
		}
		if b := tx.Bucket(BucketAuthRoles); b != nil {
			return b.ForEach(func(k, v []byte) error {
				ro := &authpb.Role{}
				if err := ro.Unmarshal(v); err != nil {
					return fmt.Errorf("%w: role %q: %w", ErrInvalid, k, err)
				}
				a.Roles = append(a.Roles, ro)
				return nil
			})
		}
		return nil
	})
	return a, err
}
