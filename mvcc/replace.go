package mvcc

// Replace replaces the store's contents by what install writes into its
// database — a Raft snapshot ingested under the store (server/raftnode) —
// and reloads the revision and the compaction state from it. Writes wait
// meanwhile; reads already running keep the view they started with, and
// pooled read views are dropped. The background compaction is stopped
// around install and resumes from the new state (callers waiting for a
// physical compaction of the old state are released). If install fails the
// store reloads whatever the database then holds.
func (s *Store) Replace(install func() error) error {
	s.compactor.stop()
	s.compactor.releaseWaiters()
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.hot.disable()
	ierr := install()
	done, scheduled, err := s.loadState()
	s.resetRecent(s.rev.Load())
	s.compactHashes.reset()
	s.readGen.Add(1)
	s.reads.dropStale(s.currentTag())
	s.compactor = startCompactor(s, done, scheduled)
	if ierr != nil {
		return ierr
	}
	if err == nil {
		s.hot.enable(s.rev.Load()) // else it stays off: the state is unknown
	}
	return err
}

// MetaKey is the Pebble key of the metadata value name, for a reader of the
// database that does not go through a Store (a Pebble snapshot being sent
// to a member).
func MetaKey(name string) []byte { return metaKey(name) }

// releaseWaiters closes every waiter's channel (the store is replaced: the
// compaction they wait for is moot).
func (c *compactor) releaseWaiters() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.waiters {
		close(w.ch)
	}
	c.waiters = nil
}

func (c *compactionHashes) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hashes = nil
}

// Resync is Publish's counterpart for a store whose contents were replaced
// (Store.Replace): the revisions since the last publish never reach the
// hub as events, so every watcher in sync falls back to catching up from
// the new contents' change log, and one whose next revision is compacted
// there is canceled with the compacted revision, as etcd's watchers are
// after a snapshot.
func (h *Hub) Resync() {
	h.mu.Lock()
	defer h.mu.Unlock()
	rev := h.s.Rev()
	if rev <= h.rev {
		return
	}
	h.resyncAll(rev + 1)
	h.rev = rev
}
