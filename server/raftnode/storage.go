package raftnode

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// DefaultLogPrefix is the one-byte Pebble key prefix of the Raft log when it
// shares the store's database; the mvcc keyspaces use 'k', 'r', 'm', 'L' and
// 'A'.
const DefaultLogPrefix = 'R'

// Key layout under the prefix P:
//
//	P 'e' index(8, big-endian)   one log entry (raftpb.Entry, gogo-marshalled)
//	P 'h'                        the HardState
//	P 't'                        the truncated state: index(8) term(8) of the
//	                             last entry removed by Compact (or of the
//	                             state a snapshot or an adopted store stands for)
const (
	keyEntry     = 'e'
	keyHardState = 'h'
	keyTruncated = 't'
)

// ErrLogNotEmpty is returned by ResetTo on a log that holds entries.
var ErrLogNotEmpty = errors.New("raftnode: log is not empty")

// LogStore is a raft.Storage over Pebble: the log entries and HardState live
// under their own key prefix, in the store's database or a database of their
// own. Writes go through Save, one batch per Ready, synced when raft says so.
//
// The ConfState is not kept here: it belongs with the state machine's applied
// index (both change in the same apply batch), and the node hands it over
// with SetConfState before raft starts.
//
// All methods are safe for concurrent use: raft reads while the node's ready
// loop writes the next batch.
type LogStore struct {
	db     *pebble.DB
	prefix byte
	failed func() error

	mu         sync.RWMutex
	hard       raftpb.HardState
	conf       raftpb.ConfState
	truncIndex uint64 // entries ≤ truncIndex are gone; Term(truncIndex) == truncTerm
	truncTerm  uint64
	last       uint64 // last index in the log (truncIndex when empty)
	cache      entryCache
}

var _ raft.Storage = (*LogStore)(nil)

// LogStoreOptions configure a LogStore.
type LogStoreOptions struct {
	// Prefix is the key prefix; 0 means DefaultLogPrefix.
	Prefix byte
	// CacheBytes bounds the in-memory cache of the newest entries, which
	// serves followers' appends and the apply of committed entries without
	// reading Pebble. Default 4 MiB; negative disables the cache.
	CacheBytes int
	// Failed reports that a write to db has failed (mvcc.Store.Failed when
	// the log shares the store's database). Pebble reports a failed WAL
	// write or sync through its logger and then returns nil from Commit,
	// so without it a save whose fsync failed would look durable. Nil
	// when nothing records such failures.
	Failed func() error
}

// OpenLogStore loads the log's state from db.
func OpenLogStore(db *pebble.DB, opts LogStoreOptions) (*LogStore, error) {
	if opts.Prefix == 0 {
		opts.Prefix = DefaultLogPrefix
	}
	if opts.CacheBytes == 0 {
		opts.CacheBytes = 4 << 20
	}
	s := &LogStore{db: db, prefix: opts.Prefix, failed: opts.Failed}
	if s.failed == nil {
		s.failed = func() error { return nil }
	}
	s.cache.maxBytes = opts.CacheBytes
	if raw, closer, err := db.Get(s.key(keyHardState)); err == nil {
		err = s.hard.Unmarshal(raw)
		closer.Close()
		if err != nil {
			return nil, fmt.Errorf("raftnode: decode hard state: %w", err)
		}
	} else if !errors.Is(err, pebble.ErrNotFound) {
		return nil, err
	}
	if raw, closer, err := db.Get(s.key(keyTruncated)); err == nil {
		if len(raw) != 16 {
			closer.Close()
			return nil, fmt.Errorf("raftnode: truncated state: bad length %d", len(raw))
		}
		s.truncIndex = binary.BigEndian.Uint64(raw)
		s.truncTerm = binary.BigEndian.Uint64(raw[8:])
		closer.Close()
	} else if !errors.Is(err, pebble.ErrNotFound) {
		return nil, err
	}
	s.last = s.truncIndex
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: s.entryKey(0), UpperBound: s.key(keyEntry + 1)})
	if err != nil {
		return nil, err
	}
	if it.Last() {
		k := it.Key()
		if len(k) != 10 {
			it.Close()
			return nil, fmt.Errorf("raftnode: corrupt log key %x", k)
		}
		s.last = binary.BigEndian.Uint64(k[2:])
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	if s.last < s.truncIndex {
		return nil, fmt.Errorf("raftnode: log ends at %d before its truncation point %d", s.last, s.truncIndex)
	}
	return s, nil
}

func (s *LogStore) key(kind byte) []byte { return []byte{s.prefix, kind} }

func (s *LogStore) entryKey(i uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{s.prefix, keyEntry}, i)
}

// SetConfState sets the ConfState InitialState returns: the one the state
// machine stored with its applied index.
func (s *LogStore) SetConfState(cs raftpb.ConfState) {
	s.mu.Lock()
	s.conf = cs
	s.mu.Unlock()
}

// InitialState implements raft.Storage.
func (s *LogStore) InitialState() (raftpb.HardState, raftpb.ConfState, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.hard, s.conf, nil
}

// HardState returns the persisted HardState.
func (s *LogStore) HardState() raftpb.HardState {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.hard
}

// FirstIndex implements raft.Storage.
func (s *LogStore) FirstIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.truncIndex + 1, nil
}

// LastIndex implements raft.Storage.
func (s *LogStore) LastIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.last, nil
}

// Term implements raft.Storage.
func (s *LogStore) Term(i uint64) (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	switch {
	case i == s.truncIndex:
		return s.truncTerm, nil
	case i < s.truncIndex:
		return 0, raft.ErrCompacted
	case i > s.last:
		return 0, raft.ErrUnavailable
	}
	if t, ok := s.cache.term(i); ok {
		return t, nil
	}
	e, err := s.readEntry(i)
	if err != nil {
		return 0, err
	}
	return e.Term, nil
}

// Entries implements raft.Storage: [lo, hi), at least one entry, then as
// many as fit in maxSize bytes.
func (s *LogStore) Entries(lo, hi, maxSize uint64) ([]raftpb.Entry, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if lo <= s.truncIndex {
		return nil, raft.ErrCompacted
	}
	if hi > s.last+1 || lo > hi {
		return nil, fmt.Errorf("raftnode: entries [%d, %d) out of bounds (last %d): %w", lo, hi, s.last, raft.ErrUnavailable)
	}
	if lo == hi {
		return nil, nil
	}
	var out []raftpb.Entry
	var size uint64
	add := func(e raftpb.Entry) bool {
		size += uint64(e.Size())
		if len(out) > 0 && size > maxSize {
			return false
		}
		out = append(out, e)
		return true
	}
	i := lo
	if c := s.cache.first(); c == 0 || i < c {
		end := hi
		if c != 0 && c < end {
			end = c
		}
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: s.entryKey(i), UpperBound: s.entryKey(end)})
		if err != nil {
			return nil, err
		}
		for ok := it.First(); ok; ok = it.Next() {
			var e raftpb.Entry
			if err := e.Unmarshal(it.Value()); err != nil {
				it.Close()
				return nil, fmt.Errorf("raftnode: decode entry: %w", err)
			}
			if e.Index != i {
				it.Close()
				return nil, fmt.Errorf("raftnode: log hole: want entry %d, found %d: %w", i, e.Index, raft.ErrUnavailable)
			}
			if !add(e) {
				return out, it.Close()
			}
			i++
		}
		if err := it.Close(); err != nil {
			return nil, err
		}
		if i < end {
			return nil, fmt.Errorf("raftnode: log hole at %d: %w", i, raft.ErrUnavailable)
		}
	}
	for ; i < hi; i++ {
		e, ok := s.cache.get(i)
		if !ok {
			return nil, fmt.Errorf("raftnode: entry %d missing from cache: %w", i, raft.ErrUnavailable)
		}
		if !add(e) {
			break
		}
	}
	return out, nil
}

// Snapshot implements raft.Storage: the log has none of its own (the
// node answers raft with the state machine's, see SnapshotStore), so raft
// waits.
func (s *LogStore) Snapshot() (raftpb.Snapshot, error) {
	return raftpb.Snapshot{}, raft.ErrSnapshotTemporarilyUnavailable
}

func (s *LogStore) readEntry(i uint64) (raftpb.Entry, error) {
	raw, closer, err := s.db.Get(s.entryKey(i))
	if errors.Is(err, pebble.ErrNotFound) {
		return raftpb.Entry{}, fmt.Errorf("raftnode: entry %d missing: %w", i, raft.ErrUnavailable)
	}
	if err != nil {
		return raftpb.Entry{}, err
	}
	defer closer.Close()
	var e raftpb.Entry
	if err := e.Unmarshal(raw); err != nil {
		return raftpb.Entry{}, fmt.Errorf("raftnode: decode entry %d: %w", i, err)
	}
	return e, nil
}

// commit commits b unless a write to the database has failed, and reports
// a failure that this commit itself hit: Pebble's Commit returns nil after
// a failed WAL write or sync (its logger is told), and its commit pipeline
// must not be used again (a later commit could block for good).
func (s *LogStore) commit(b *pebble.Batch, opt *pebble.WriteOptions) error {
	if err := s.failed(); err != nil {
		return err
	}
	if err := b.Commit(opt); err != nil {
		return err
	}
	return s.failed()
}

// Save persists one Ready's entries and HardState in one batch: entries
// overwrite any conflicting tail (a new leader's log wins), and the batch is
// synced when sync is set (raft's Ready.MustSync). Either may be empty.
func (s *LogStore) Save(hs raftpb.HardState, ents []raftpb.Entry, sync bool) error {
	if raft.IsEmptyHardState(hs) && len(ents) == 0 {
		return nil
	}
	b := s.db.NewBatch()
	defer b.Close()
	s.mu.RLock()
	first, last := s.truncIndex+1, s.last
	s.mu.RUnlock()
	if len(ents) > 0 {
		if ents[0].Index < first {
			return fmt.Errorf("raftnode: append at %d below the first index %d", ents[0].Index, first)
		}
		if ents[0].Index > last+1 {
			return fmt.Errorf("raftnode: append at %d leaves a hole after %d", ents[0].Index, last)
		}
		// One key buffer and one value buffer for the whole Ready: the
		// batch copies both.
		var buf []byte
		key := s.entryKey(0)
		for i := range ents {
			n := ents[i].Size()
			if cap(buf) < n {
				buf = make([]byte, n)
			}
			buf = buf[:n]
			if _, err := ents[i].MarshalTo(buf); err != nil {
				return err
			}
			binary.BigEndian.PutUint64(key[2:], ents[i].Index)
			if err := b.Set(key, buf, nil); err != nil {
				return err
			}
		}
		if newLast := ents[len(ents)-1].Index; newLast < last {
			// The conflicting tail beyond the new entries goes.
			if err := b.DeleteRange(s.entryKey(newLast+1), s.entryKey(last+1), nil); err != nil {
				return err
			}
		}
	}
	if !raft.IsEmptyHardState(hs) {
		raw, err := hs.Marshal()
		if err != nil {
			return err
		}
		if err := b.Set(s.key(keyHardState), raw, nil); err != nil {
			return err
		}
	}
	opt := pebble.NoSync
	if sync {
		opt = pebble.Sync
	}
	if err := s.commit(b, opt); err != nil {
		return err
	}
	s.mu.Lock()
	if len(ents) > 0 {
		s.last = ents[len(ents)-1].Index
		s.cache.append(ents)
	}
	if !raft.IsEmptyHardState(hs) {
		s.hard = hs
	}
	s.mu.Unlock()
	return nil
}

// Append persists entries (synced), overwriting a conflicting tail.
func (s *LogStore) Append(ents []raftpb.Entry) error {
	return s.Save(raftpb.HardState{}, ents, true)
}

// SetHardState persists hs (synced).
func (s *LogStore) SetHardState(hs raftpb.HardState) error {
	return s.Save(hs, nil, true)
}

// Compact removes the entries up to and including index, keeping its term
// for raft's log matching. The caller guarantees the state machine's effects
// up to index are durable (a later synced write of the same database does;
// with a log in a database of its own the state machine must have synced).
func (s *LogStore) Compact(index uint64) error {
	s.mu.RLock()
	trunc, last := s.truncIndex, s.last
	s.mu.RUnlock()
	if index <= trunc {
		return raft.ErrCompacted
	}
	if index > last {
		return fmt.Errorf("raftnode: compact %d beyond the last index %d", index, last)
	}
	term, err := s.Term(index)
	if err != nil {
		return err
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.DeleteRange(s.entryKey(trunc+1), s.entryKey(index+1), nil); err != nil {
		return err
	}
	if err := b.Set(s.key(keyTruncated), truncValue(index, term), nil); err != nil {
		return err
	}
	if err := s.commit(b, pebble.NoSync); err != nil {
		return err
	}
	s.mu.Lock()
	s.truncIndex, s.truncTerm = index, term
	s.cache.dropBefore(index + 1)
	s.mu.Unlock()
	return nil
}

// ResetTo starts an empty log at (index, term), as though entries up to
// index had been applied and compacted, with a HardState committing them:
// for a store whose state predates its log (a single-node data directory
// becoming a one-member cluster). It is synced.
func (s *LogStore) ResetTo(index, term uint64) error {
	s.mu.RLock()
	empty := s.last == 0 && s.truncIndex == 0
	s.mu.RUnlock()
	if !empty {
		return ErrLogNotEmpty
	}
	hs := raftpb.HardState{Term: term, Commit: index}
	raw, err := hs.Marshal()
	if err != nil {
		return err
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.Set(s.key(keyTruncated), truncValue(index, term), nil); err != nil {
		return err
	}
	if err := b.Set(s.key(keyHardState), raw, nil); err != nil {
		return err
	}
	if err := s.commit(b, pebble.Sync); err != nil {
		return err
	}
	s.mu.Lock()
	s.truncIndex, s.truncTerm, s.last, s.hard = index, term, index, hs
	s.mu.Unlock()
	return nil
}

// resetToSnapshot sets the in-memory state to what an installed snapshot
// wrote: no entries, truncated at (index, term), and hs.
func (s *LogStore) resetToSnapshot(index, term uint64, hs raftpb.HardState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.truncIndex, s.truncTerm, s.last, s.hard = index, term, index, hs
	clear(s.cache.ents)
	s.cache.ents, s.cache.bytes = s.cache.ents[:0], 0
}

// LogBytes estimates the disk space of the log (entries and state).
func (s *LogStore) LogBytes() (uint64, error) {
	return s.db.EstimateDiskUsage([]byte{s.prefix}, []byte{s.prefix + 1})
}

func truncValue(index, term uint64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, index), term)
}

// entryCache holds the newest entries, contiguous, up to maxBytes.
type entryCache struct {
	maxBytes int
	bytes    int
	ents     []raftpb.Entry
}

func (c *entryCache) first() uint64 {
	if len(c.ents) == 0 {
		return 0
	}
	return c.ents[0].Index
}

func (c *entryCache) get(i uint64) (raftpb.Entry, bool) {
	if len(c.ents) == 0 || i < c.ents[0].Index || i > c.ents[len(c.ents)-1].Index {
		return raftpb.Entry{}, false
	}
	return c.ents[i-c.ents[0].Index], true
}

func (c *entryCache) term(i uint64) (uint64, bool) {
	e, ok := c.get(i)
	return e.Term, ok
}

// append adds ents, cutting any cached tail they replace; entries that do
// not continue the cache replace it.
func (c *entryCache) append(ents []raftpb.Entry) {
	if c.maxBytes < 0 || len(ents) == 0 {
		return
	}
	at := ents[0].Index
	if len(c.ents) > 0 && at >= c.ents[0].Index && at <= c.ents[len(c.ents)-1].Index+1 {
		keep := int(at - c.ents[0].Index)
		for _, e := range c.ents[keep:] {
			c.bytes -= e.Size()
		}
		clear(c.ents[keep:])
		c.ents = c.ents[:keep]
	} else {
		clear(c.ents)
		c.ents, c.bytes = c.ents[:0], 0
	}
	for _, e := range ents {
		c.ents = append(c.ents, e)
		c.bytes += e.Size()
	}
	drop := 0
	for c.bytes > c.maxBytes && drop < len(c.ents)-1 {
		c.bytes -= c.ents[drop].Size()
		drop++
	}
	if drop > 0 {
		c.dropFront(drop)
	}
}

func (c *entryCache) dropBefore(i uint64) {
	if len(c.ents) == 0 || i <= c.ents[0].Index {
		return
	}
	n := min(int(i-c.ents[0].Index), len(c.ents))
	for _, e := range c.ents[:n] {
		c.bytes -= e.Size()
	}
	c.dropFront(n)
}

// dropFront removes the first n entries, copying the rest down when the
// slice's dead head grows past its live part so memory stays bounded.
func (c *entryCache) dropFront(n int) {
	clear(c.ents[:n])
	c.ents = c.ents[n:]
	if cap(c.ents) > 2*len(c.ents)+64 {
		c.ents = append([]raftpb.Entry(nil), c.ents...)
	}
}
