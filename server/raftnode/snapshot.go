package raftnode

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3/raftpb"
)

// Snapshots of the state machine, for a member whose next entries were
// truncated from the leader's log.
//
// The state machine's data lives in the log's Pebble database: a snapshot
// is every key of that database except the log's prefix (and the keys the
// member keeps as its own, SnapshotStoreOptions.LocalKeys), read from a
// Pebble snapshot, so it is consistent at the applied index the data
// itself records (SnapshotStateMachine.SnapshotState). The sender streams
// it as records; the receiver writes them into sstables in a staging
// directory, each sstable carrying a range deletion of the span it covers,
// verifies the stream's SHA-256, and only then hands the snapshot to raft.
// Installing it is one Pebble ingest of those sstables plus one that
// rewrites the log's span (the truncated state at the snapshot and the
// HardState): every replaced key goes, every key of the snapshot and the
// log's new state appear, atomically, because an ingest is one version
// edit. A crash before it leaves the old state (the staging directory is
// removed at the next start), after it the new one.

// SnapshotStateMachine is a StateMachine whose state lives in the log's
// Pebble database, so that it can be sent to and installed on members as a
// snapshot. Its methods are called as StateMachine's, from the node's apply
// goroutine, except SnapshotState, which the sender calls on its own.
type SnapshotStateMachine interface {
	StateMachine
	// SnapshotState reads the applied index and the ConfState stored with
	// it from r, a Pebble snapshot of the database.
	SnapshotState(r pebble.Reader) (index uint64, cs raftpb.ConfState, err error)
	// InstallSnapshot replaces the state by a snapshot's: with its own
	// writes stopped it calls install, which ingests the snapshot's data
	// and resets the log to it, then reloads what it derives from the
	// store and returns the members stored in the new state. An error is
	// fatal: the node stops.
	InstallSnapshot(meta raftpb.SnapshotMetadata, install func() error) (Restored, error)
}

// Restored is the membership a snapshot holds: the node reconnects its
// transport to Peers and refuses Removed.
type Restored struct {
	Peers   []Peer
	Removed []uint64
}

// SnapshotStoreOptions configure a SnapshotStore.
type SnapshotStoreOptions struct {
	// Dir is the staging directory for received snapshots; it is emptied
	// at open. It must be on the database's filesystem (ingest links the
	// files).
	Dir string
	// LocalKeys are Pebble keys that belong to this member, not to the
	// replicated state (its own member ID): they are neither sent nor
	// replaced by a snapshot.
	LocalKeys [][]byte
	// SSTBytes bounds one staged sstable (64 MiB).
	SSTBytes int64
	// OnSaved, if set, is told how long each received snapshot took from
	// its first byte until it was durable on disk (etcd's
	// etcd_snap_db_save_total_duration_seconds).
	OnSaved func(time.Duration)
}

// SnapshotStore sends and installs snapshots of the database a LogStore
// shares with its state machine.
type SnapshotStore struct {
	log  *LogStore
	db   *pebble.DB
	dir  string
	opts SnapshotStoreOptions
	// spans are the key ranges a snapshot carries and replaces, sorted:
	// everything but the log's prefix and the local keys.
	spans []keySpan

	mu      sync.Mutex
	seq     uint64
	staged  map[string]uint64 // staged snapshot directory → its index
	receive sync.Mutex        // one snapshot received at a time

	// testHook, in tests, fails an install at a step ("staged": before the
	// ingest; "ingested": after it, before the log's memory is reset), as
	// a crash there would stop it.
	testHook func(step string) error
}

type keySpan struct{ start, end []byte }

// maxStagedSnapshots bounds the snapshots staged but not installed (raft
// may ignore one it received: stale, or overtaken by the log).
const maxStagedSnapshots = 3

// NewSnapshotStore opens the snapshot store of log's database.
func NewSnapshotStore(log *LogStore, opts SnapshotStoreOptions) (*SnapshotStore, error) {
	if opts.Dir == "" {
		return nil, errors.New("raftnode: snapshot store needs a staging directory")
	}
	if opts.SSTBytes <= 0 {
		opts.SSTBytes = 64 << 20
	}
	if err := os.RemoveAll(opts.Dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, err
	}
	s := &SnapshotStore{log: log, db: log.db, dir: opts.Dir, opts: opts, staged: map[string]uint64{}}
	s.spans = replacedSpans(log.prefix, opts.LocalKeys)
	return s, nil
}

// replacedSpans is [0x00, 0xff) without the log's prefix and the local
// keys. Every key of the stores that share the database starts with a
// letter, so the bounds cover them all.
func replacedSpans(prefix byte, local [][]byte) []keySpan {
	holes := []keySpan{{start: []byte{prefix}, end: []byte{prefix + 1}}}
	for _, k := range local {
		holes = append(holes, keySpan{start: slices.Clone(k), end: append(slices.Clone(k), 0)})
	}
	slices.SortFunc(holes, func(a, b keySpan) int { return bytes.Compare(a.start, b.start) })
	var out []keySpan
	at := []byte{0x00}
	for _, h := range holes {
		if bytes.Compare(h.start, at) > 0 {
			out = append(out, keySpan{start: at, end: h.start})
		}
		if bytes.Compare(h.end, at) > 0 {
			at = h.end
		}
	}
	return append(out, keySpan{start: at, end: []byte{0xff}})
}

// snapshotView is a consistent view of the data being sent.
type snapshotView struct {
	s    *SnapshotStore
	snap *pebble.Snapshot
	meta raftpb.SnapshotMetadata
	// onFinish, if set, learns whether the snapshot was delivered.
	onFinish func(delivered bool)
}

// finish releases the view once the transfer ended.
func (v *snapshotView) finish(delivered bool) {
	v.snap.Close()
	if v.onFinish != nil {
		v.onFinish(delivered)
	}
}

// open takes a Pebble snapshot and reads the state it stands for.
func (s *SnapshotStore) open(sm SnapshotStateMachine) (*snapshotView, error) {
	snap := s.db.NewSnapshot()
	index, cs, err := sm.SnapshotState(snap)
	if err == nil && index == 0 {
		err = errors.New("raftnode: nothing applied to snapshot")
	}
	var term uint64
	if err == nil {
		term, err = s.log.Term(index)
	}
	if err != nil {
		snap.Close()
		return nil, fmt.Errorf("raftnode: open snapshot: %w", err)
	}
	return &snapshotView{s: s, snap: snap, meta: raftpb.SnapshotMetadata{Index: index, Term: term, ConfState: cs}}, nil
}

// snapshotChunkBytes is the size of one data frame.
const snapshotChunkBytes = 1 << 20

// writeTo streams the view's records, in key order, as data frames of
// about snapshotChunkBytes: the frame kind, then records. Each frame is a
// new buffer the callee may keep.
func (v *snapshotView) writeTo(send func(frame []byte) error) error {
	newFrame := func() []byte { return append(make([]byte, 0, snapshotChunkBytes+4096), snapFrameData) }
	buf := newFrame()
	for _, sp := range v.s.spans {
		it, err := v.snap.NewIter(&pebble.IterOptions{LowerBound: sp.start, UpperBound: sp.end})
		if err != nil {
			return err
		}
		for ok := it.First(); ok; ok = it.Next() {
			val, err := it.ValueAndErr()
			if err != nil {
				it.Close()
				return err
			}
			buf = appendRecord(buf, it.Key(), val)
			if len(buf) >= snapshotChunkBytes {
				if err := send(buf); err != nil {
					it.Close()
					return err
				}
				buf = newFrame()
			}
		}
		if err := it.Close(); err != nil {
			return err
		}
	}
	if len(buf) > 1 {
		return send(buf)
	}
	return nil
}

func appendRecord(b, k, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(k)))
	b = append(b, k...)
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// ErrSnapshotBusy refuses a snapshot while another is being received or
// too many wait to be installed; the sender retries later.
var ErrSnapshotBusy = errors.New("raftnode: another snapshot is being received")

// snapshotStage writes one received snapshot into sstables.
type snapshotStage struct {
	s     *SnapshotStore
	meta  raftpb.SnapshotMetadata
	dir   string
	sum   hash.Hash
	bytes int64
	files []string
	start time.Time // staging began

	span int // index of the span being written
	w    *sstable.Writer
	lo   []byte // start of the current file's range deletion
	size int64  // bytes in the current file
	last []byte // last key written (order check)
}

// stage starts receiving a snapshot at meta on a member that applied
// through applied. Only one is received at a time; the caller must finish
// or abort it.
func (s *SnapshotStore) stage(meta raftpb.SnapshotMetadata, applied uint64) (*snapshotStage, error) {
	if !s.receive.TryLock() {
		return nil, ErrSnapshotBusy
	}
	s.mu.Lock()
	s.pruneLocked(applied)
	if len(s.staged) >= maxStagedSnapshots {
		s.mu.Unlock()
		s.receive.Unlock()
		return nil, ErrSnapshotBusy
	}
	s.seq++
	dir := filepath.Join(s.dir, fmt.Sprintf("%016x-%d", meta.Index, s.seq))
	s.mu.Unlock()
	if err := os.Mkdir(dir, 0o700); err != nil {
		s.receive.Unlock()
		return nil, err
	}
	return &snapshotStage{s: s, meta: meta, dir: dir, sum: sha256.New(), lo: s.spans[0].start, start: time.Now()}, nil
}

// write adds one data chunk: records in key order.
func (st *snapshotStage) write(chunk []byte) error {
	st.sum.Write(chunk)
	st.bytes += int64(len(chunk))
	for len(chunk) > 0 {
		k, rest, ok := cutVarBytes(chunk)
		if !ok {
			return errors.New("raftnode: malformed snapshot record")
		}
		v, rest, ok := cutVarBytes(rest)
		if !ok {
			return errors.New("raftnode: malformed snapshot record")
		}
		chunk = rest
		if err := st.add(k, v); err != nil {
			return err
		}
	}
	return nil
}

func cutVarBytes(b []byte) (v, rest []byte, ok bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil, false
	}
	return b[k : k+int(n)], b[k+int(n):], true
}

// add writes one key into the file of its span, closing files at span
// ends and at the size bound.
func (st *snapshotStage) add(k, v []byte) error {
	if st.last != nil && bytes.Compare(k, st.last) <= 0 {
		return fmt.Errorf("raftnode: snapshot keys out of order at %q", k)
	}
	spans := st.s.spans
	for st.span < len(spans) && bytes.Compare(k, spans[st.span].end) >= 0 {
		if err := st.closeFile(spans[st.span].end); err != nil {
			return err
		}
		st.span++
		if st.span < len(spans) {
			st.lo = spans[st.span].start
		}
	}
	if st.span == len(spans) || bytes.Compare(k, spans[st.span].start) < 0 {
		return fmt.Errorf("raftnode: snapshot key %q outside the replicated spans", k)
	}
	if st.w != nil && st.size >= st.s.opts.SSTBytes {
		if err := st.closeFile(k); err != nil {
			return err
		}
		st.lo = slices.Clone(k)
	}
	if st.w == nil {
		if err := st.openFile(); err != nil {
			return err
		}
	}
	st.last = append(st.last[:0], k...)
	st.size += int64(len(k) + len(v))
	return st.w.Set(k, v)
}

func (st *snapshotStage) openFile() error {
	name := filepath.Join(st.dir, fmt.Sprintf("%06d.sst", len(st.files)))
	f, err := vfs.Default.Create(name, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	st.w = sstable.NewWriter(objstorageprovider.NewFileWritable(f), sstable.WriterOptions{TableFormat: st.s.db.TableFormat()})
	st.files = append(st.files, name)
	st.size = 0
	return nil
}

// closeFile ends the current file (opening one if the span had no key, so
// that its range deletion still replaces it) with a range deletion of
// [lo, hi): an ingested file's range deletion does not cover its own keys.
func (st *snapshotStage) closeFile(hi []byte) error {
	if st.w == nil {
		if err := st.openFile(); err != nil {
			return err
		}
	}
	if err := st.w.DeleteRange(st.lo, hi); err != nil {
		st.w.Close()
		st.w = nil
		return err
	}
	err := st.w.Close() // syncs the file
	st.w = nil
	return err
}

// finish checks the stream's length and SHA-256 against the sender's,
// completes the files and registers the staged snapshot; it returns the
// reference raft carries to the install (the snapshot's Data).
func (st *snapshotStage) finish(sum []byte, n int64) ([]byte, error) {
	if n != st.bytes || !bytes.Equal(sum, st.sum.Sum(nil)) {
		st.abort()
		return nil, fmt.Errorf("%w: received %d bytes, sender sent %d", ErrSnapshotChecksum, st.bytes, n)
	}
	spans := st.s.spans
	for st.span < len(spans) {
		if err := st.closeFile(spans[st.span].end); err != nil {
			st.abort()
			return nil, err
		}
		st.span++
		if st.span < len(spans) {
			st.lo = spans[st.span].start
		}
	}
	if err := syncDir(st.dir); err != nil {
		st.abort()
		return nil, err
	}
	name := filepath.Base(st.dir)
	st.s.mu.Lock()
	st.s.staged[name] = st.meta.Index
	st.s.mu.Unlock()
	st.s.receive.Unlock()
	if f := st.s.opts.OnSaved; f != nil {
		f(time.Since(st.start))
	}
	return []byte(snapshotRefPrefix + name), nil
}

// ErrSnapshotChecksum refuses a snapshot whose data does not match the
// sender's checksum.
var ErrSnapshotChecksum = errors.New("raftnode: snapshot checksum mismatch")

func (st *snapshotStage) abort() {
	if st.w != nil {
		st.w.Close()
		st.w = nil
	}
	os.RemoveAll(st.dir)
	st.s.receive.Unlock()
}

const snapshotRefPrefix = "metastore-snapshot:"

// install ingests a staged snapshot and resets the log to it, with hs as
// the HardState (its commit raised to the snapshot), atomically; it is
// durable when install returns.
func (s *SnapshotStore) install(ref []byte, meta raftpb.SnapshotMetadata, hs raftpb.HardState) error {
	name, ok := strings.CutPrefix(string(ref), snapshotRefPrefix)
	if !ok || strings.ContainsAny(name, `/\`) || name == "" {
		return fmt.Errorf("raftnode: snapshot at %d carries no staged data", meta.Index)
	}
	dir := filepath.Join(s.dir, name)
	s.mu.Lock()
	_, staged := s.staged[name]
	s.mu.Unlock()
	if !staged {
		return fmt.Errorf("raftnode: snapshot %s at %d is not staged", name, meta.Index)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var files []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".sst") {
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	hs.Commit = max(hs.Commit, meta.Index)
	logFile, err := s.writeLogState(dir, meta, hs)
	if err != nil {
		return err
	}
	files = append(files, logFile)
	if err := s.hook("staged"); err != nil {
		return err
	}
	if err := s.db.Ingest(context.Background(), files); err != nil {
		return fmt.Errorf("raftnode: ingest snapshot at %d: %w", meta.Index, err)
	}
	// NB: an ingest that overlaps the memtable may be recorded in the WAL
	// only; the snapshot must be durable before raft answers the leader.
	if err := s.db.LogData(nil, pebble.Sync); err != nil {
		return err
	}
	if err := s.hook("ingested"); err != nil {
		return err
	}
	s.log.resetToSnapshot(meta.Index, meta.Term, hs)
	s.mu.Lock()
	s.pruneLocked(meta.Index)
	s.mu.Unlock()
	return nil
}

// writeLogState writes the sstable that replaces the log's span: no
// entries, truncated at the snapshot, and hs.
func (s *SnapshotStore) writeLogState(dir string, meta raftpb.SnapshotMetadata, hs raftpb.HardState) (string, error) {
	name := filepath.Join(dir, "log.sst")
	f, err := vfs.Default.Create(name, vfs.WriteCategoryUnspecified)
	if err != nil {
		return "", err
	}
	w := sstable.NewWriter(objstorageprovider.NewFileWritable(f), sstable.WriterOptions{TableFormat: s.db.TableFormat()})
	raw, err := hs.Marshal()
	if err == nil {
		err = w.Set(s.log.key(keyHardState), raw)
	}
	if err == nil {
		err = w.Set(s.log.key(keyTruncated), truncValue(meta.Index, meta.Term))
	}
	if err == nil {
		err = w.DeleteRange([]byte{s.log.prefix}, []byte{s.log.prefix + 1})
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	return name, err
}

func (s *SnapshotStore) hook(step string) error {
	if s.testHook != nil {
		return s.testHook(step)
	}
	return nil
}

// pruneLocked removes staged snapshots at or below index, an applied
// index: raft will never install them (it ignores a snapshot that is not
// past its commit index).
func (s *SnapshotStore) pruneLocked(index uint64) {
	for name, i := range s.staged {
		if i <= index {
			os.RemoveAll(filepath.Join(s.dir, name))
			delete(s.staged, name)
		}
	}
}

// stagedCount reports the snapshots staged and not installed (tests).
func (s *SnapshotStore) stagedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.staged)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
