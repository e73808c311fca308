package mvcc

import (
	"context"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// HistoryRequest selects the changes History returns.
type HistoryRequest struct {
	// From and To bound the revisions read, both inclusive. To is clamped
	// to the newest committed revision.
	From, To int64
	// Match, if set, keeps only events on keys it accepts; other change-log
	// entries are skipped without reading their versions.
	Match func(key []byte) bool
	// MaxRevs stops the read after this many revisions with matching
	// events; 0 means no limit.
	MaxRevs int
	// MaxScan stops the read after this many change-log entries, matching
	// or not, at a revision boundary; 0 means no limit. It keeps one call
	// short when the log is long and few entries match.
	MaxScan int
	// MaxBytes stops the read at a revision boundary once the events read
	// hold this many bytes of keys and values (previous versions
	// included); 0 means no limit. It bounds the memory one call takes
	// when values are large.
	MaxBytes int
	// PrevKV fills each event's PrevKv with the key's version at rev-1, as
	// etcd's watch does. It is left out for revisions at or below the
	// compacted one, whose previous versions compaction may have removed.
	PrevKV bool
}

// History reads what changed at revisions [From, To] from the change log, in
// the form the applier publishes it: events in sub-revision order, DELETE
// events carrying only the key and the mod revision. Revisions without a
// matching event are left out. It returns the events and the first revision
// it did not cover (To+1 when it read everything asked for).
//
// History fails with ErrCompacted if From is below the compacted revision.
func (s *Store) History(ctx context.Context, req HistoryRequest) ([]RevisionEvents, int64, error) {
	snap := s.db.NewSnapshot()
	defer snap.Close()
	// NB: the compacted revision is read after the snapshot is taken, as in
	// Read: whatever the snapshot lacks because of a compaction is below it.
	firstRev := s.compactRev.Load()
	if req.From < firstRev {
		return nil, req.From, ErrCompacted
	}
	if to := s.rev.Load(); req.To > to {
		req.To = to
	}
	if req.From > req.To {
		return nil, req.From, nil
	}
	logIt, err := snap.NewIter(&pebble.IterOptions{
		LowerBound: appendLogKey(nil, req.From, 0),
		UpperBound: appendLogKey(nil, req.To+1, 0),
	})
	if err != nil {
		return nil, req.From, err
	}
	defer logIt.Close()
	verIt, err := snap.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixKey}, UpperBound: []byte{prefixKey + 1}})
	if err != nil {
		return nil, req.From, err
	}
	defer verIt.Close()

	var (
		out     []RevisionEvents
		cur     RevisionEvents // the revision being collected
		curRev  int64          // revision of the entries being scanned
		scanned int
		size    int // bytes of keys and values in out and cur
		seekBuf []byte
	)
	flush := func() {
		if len(cur.Events) > 0 {
			out = append(out, cur)
		}
		cur = RevisionEvents{}
	}
	for ok := logIt.First(); ok; ok = logIt.Next() {
		k := logIt.Key()
		if len(k) != logKeyLen {
			return nil, req.From, errCorruptKey
		}
		rev := logKeyRev(k)
		if rev != curRev {
			// A revision boundary: the only place a read may stop, so that
			// a revision's events are never split.
			flush()
			if req.MaxRevs > 0 && len(out) >= req.MaxRevs {
				return out, rev, nil
			}
			if req.MaxScan > 0 && scanned >= req.MaxScan {
				return out, rev, nil
			}
			if req.MaxBytes > 0 && size >= req.MaxBytes && len(out) > 0 {
				return out, rev, nil
			}
			if scanned&1023 == 1023 {
				if err := ctx.Err(); err != nil {
					return nil, req.From, err
				}
			}
			curRev = rev
			cur.Rev = rev
		}
		scanned++
		key, err := logIt.ValueAndErr()
		if err != nil {
			return nil, req.From, err
		}
		if req.Match != nil && !req.Match(key) {
			continue
		}
		ev, err := historyEvent(verIt, &seekBuf, key, rev, req.PrevKV && rev > firstRev)
		if err != nil {
			return nil, req.From, err
		}
		size += len(ev.Kv.Key) + len(ev.Kv.Value)
		if ev.PrevKv != nil {
			size += len(ev.PrevKv.Key) + len(ev.PrevKv.Value)
		}
		cur.Events = append(cur.Events, ev)
	}
	if err := logIt.Error(); err != nil {
		return nil, req.From, err
	}
	flush()
	return out, req.To + 1, nil
}

// historyEvent builds the event for key's change at rev. Versions of a key
// are stored newest first, so the version at rev-1 (PrevKv) is the entry
// right after the version at rev.
func historyEvent(it *pebble.Iterator, seekBuf *[]byte, key []byte, rev int64, prevKV bool) (mvccpb.Event, error) {
	userKey := append([]byte(nil), key...)
	*seekBuf = appendVersionKey((*seekBuf)[:0], key, rev)
	prefix := (*seekBuf)[:len(*seekBuf)-revSuffixLen]
	ev := mvccpb.Event{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: userKey, ModRevision: rev}}
	found := it.SeekGE(*seekBuf)
	if found && bytesHasPrefix(it.Key(), prefix) && versionKeyRev(it.Key()) == rev {
		v, err := it.ValueAndErr()
		if err != nil {
			return ev, err
		}
		rec, err := decodeVersionValue(v)
		if err != nil {
			return ev, err
		}
		if !rec.tombstone {
			kv, err := recordToKV(it.Key(), rec)
			if err != nil {
				return ev, err
			}
			ev = mvccpb.Event{Type: mvccpb.PUT, Kv: &kv}
		}
		found = it.Next()
	}
	// NB: a change-log entry whose version is missing is a tombstone at the
	// compacted revision, which compaction removes (the change log at that
	// revision stays); it is still a DELETE.
	if !prevKV || !found || !bytesHasPrefix(it.Key(), prefix) {
		return ev, it.Error()
	}
	if ev.Type == mvccpb.PUT && ev.Kv.Version == 1 {
		return ev, nil // a creation has no previous version
	}
	v, err := it.ValueAndErr()
	if err != nil {
		return ev, err
	}
	rec, err := decodeVersionValue(v)
	if err != nil || rec.tombstone {
		return ev, err
	}
	kv, err := recordToKV(it.Key(), rec)
	if err != nil {
		return ev, err
	}
	ev.PrevKv = &kv
	return ev, nil
}
