package v3rpc

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/etcdformat"
	"github.com/metastore-dev/metastore/mvcc"
	"github.com/metastore-dev/metastore/server/apply"
)

// SnapshotTmpDir is where snapshots are checkpointed inside the data
// directory (hard links need the same file system). Pebble ignores it;
// leftovers of a crash are removed at start.
const SnapshotTmpDir = "snapshot.tmp"

// snapshotChunk is the size of each streamed message, as etcd's.
const snapshotChunk = 32 * 1024

var snapshotSeq atomic.Int64

// Snapshot streams a consistent copy of the store as an etcd database
// (etcdmigrate.go), then its SHA-256 as a last message, exactly as etcd
// streams its bbolt file: `etcdctl snapshot save` stores it, etcd's
// `snapshot status` and `snapshot restore` read it, and `metastore snapshot
// restore` brings it back.
func (m *maintenanceServer) Snapshot(r *pb.SnapshotRequest, srv pb.Maintenance_SnapshotServer) error {
	s := m.s
	if err := s.requireAdmin(srv.Context()); err != nil {
		return toGRPCError(err)
	}
	dir := filepath.Join(s.cfg.DataDir, SnapshotTmpDir, strconv.FormatInt(snapshotSeq.Add(1), 10))
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return toGRPCError(err)
	}
	snap, err := newEtcdSnapshot(srv.Context(), s.store, dir)
	if err != nil {
		return toGRPCError(err)
	}
	defer snap.Close()

	start := time.Now()
	total := snap.Size()
	s.lg.Info("sending database snapshot to client", "total-bytes", total)
	pr, pw := io.Pipe()
	defer pr.Close()
	go func() {
		_, err := snap.WriteTo(pw)
		pw.CloseWithError(err)
	}()
	h := sha256.New()
	sent := int64(0)
	for sent < total {
		// NB: Send may keep the buffer until it is written out; never reuse it.
		buf := make([]byte, min(snapshotChunk, total-sent))
		n, err := io.ReadFull(pr, buf)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("snapshot ended after %d of %d bytes", sent+int64(n), total)
			}
			s.lg.Warn("snapshot failed", "err", err)
			return toGRPCError(err)
		}
		sent += int64(n)
		h.Write(buf)
		// As etcd: the version a snapshot carries is its storage version
		// (etcdctl prints it as "Server version").
		if err := srv.Send(&pb.SnapshotResponse{RemainingBytes: uint64(total - sent), Blob: buf, Version: etcdformat.StorageVersion}); err != nil {
			return toGRPCError(err)
		}
	}
	if err := srv.Send(&pb.SnapshotResponse{Blob: h.Sum(nil), Version: etcdformat.StorageVersion}); err != nil {
		return toGRPCError(err)
	}
	s.metrics.etcd.snapshotSec.Observe(time.Since(start).Seconds())
	s.lg.Info("sent database snapshot to client", "total-bytes", total, "took", time.Since(start))
	return nil
}

// RestoreSnapshot restores a snapshot file (as saved by `etcdctl snapshot
// save` from etcd or metastore, or etcd's member/snap/db with
// SkipHashCheck) into dataDir, which must not exist or be empty. As
// etcdutl's restore, the result is a new one-member cluster: it gets fresh
// cluster and member ids; the data, revisions and compaction are the
// snapshot's (and alarms too for metastore's earlier archive format).
func RestoreSnapshot(file, dataDir string, opts RestoreOptions) (rev int64, err error) {
	if etcd, err := isEtcdDB(file); err != nil {
		return 0, err
	} else if etcd {
		return restoreEtcd(file, dataDir, opts)
	}
	if opts.BumpRevision > 0 || opts.MarkCompacted {
		return 0, errors.New("restore: --bump-revision and --mark-compacted apply to etcd snapshots only")
	}
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if rev, err = mvcc.RestoreSnapshot(f, st.Size(), dataDir); err != nil {
		return 0, err
	}
	store, err := mvcc.Open(dataDir, mvcc.Options{})
	if err != nil {
		return 0, err
	}
	defer func() {
		if cerr := store.Close(); err == nil {
			err = cerr
		}
	}()
	ids := newMemberIDs()
	if err := writeIDs(store, ids); err != nil {
		return 0, err
	}
	// The restored member starts a new one-member cluster: the old member
	// set goes, and the first start makes one of the new member.
	b, err := store.NewBatch()
	if err != nil {
		return 0, err
	}
	if err := apply.ClearMembers(b); err != nil {
		b.Abort()
		return 0, err
	}
	if err := b.Commit(); err != nil {
		return 0, err
	}
	if opts.Finish != nil {
		if err := opts.Finish(store); err != nil {
			return 0, err
		}
	}
	return store.Rev(), nil
}
