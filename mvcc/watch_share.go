package mvcc

// Shared senders. A stream's responses are normally taken by its own
// sender, which waits on Ready. Several streams may instead share one
// sender (the server runs one for all the watch streams of a client
// connection), so that a publish that feeds them wakes one goroutine, not
// one per stream. The shared sender takes only what is queued
// (TakeQueued) and never waits on a client; whatever needs waiting or
// reading — a watcher catching up from history, a busy stream holding
// its responses back to batch them, a client whose window is full — it
// hands back to the stream's own sender (Unshare), which gives the stream
// back (Share) once its queue is empty and no watcher is behind.
//
// Exactly one of the two senders owns the stream at a time: the shared
// one while Shared reports true, the own one otherwise. Ownership changes
// under the queue's lock, together with the readiness routing, so no
// response is left without a sender to take it.

// SetNotify sets the function that tells the shared sender the stream has
// responses (it must not block). Call it before Share.
func (ws *WatchStream) SetNotify(f func()) {
	ws.mu.Lock()
	ws.notify = f
	ws.mu.Unlock()
}

// Share hands the stream to the shared sender if nothing waits in its
// queue and no watcher is behind; from then on readiness goes to the
// notify function. Only the stream's own sender calls it; false: it keeps
// the stream.
func (ws *WatchStream) Share() bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.notify == nil || ws.queuedLocked() > 0 || ws.lagN.Load() > 0 {
		return false
	}
	ws.shared = true
	return true
}

// Unshare gives the stream back to its own sender and signals Ready so
// that it looks at once. Only the shared sender calls it, while it owns
// the stream.
func (ws *WatchStream) Unshare() {
	ws.mu.Lock()
	ws.shared = false
	ws.mu.Unlock()
	ws.signal(false)
}

// Shared reports whether the shared sender owns the stream.
func (ws *WatchStream) Shared() bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return ws.shared
}

// Lagging reports whether a watcher of the stream is catching up from
// history, which only Next does.
func (ws *WatchStream) Lagging() bool { return ws.lagN.Load() > 0 }

// TakeQueued appends to buf, in order, up to max of the queued responses,
// and says whether more wait. Unlike Next it never reads history: the
// shared sender calls it, and hands the stream back when Lagging.
func (ws *WatchStream) TakeQueued(buf []WatchResponse, max int) (out []WatchResponse, more bool) {
	out, left := ws.takeCounted(buf, max)
	return out, left > 0
}
