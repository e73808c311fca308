package mvcc

import (
	"testing"
)

// TestWatchShare: while a stream is shared its readiness goes to notify,
// not Ready; it can be shared only with an empty queue and no watcher
// behind, and Unshare signals Ready.
func TestWatchShare(t *testing.T) {
	e := newWatchEnv(t, HubOptions{})
	ws := e.h.NewStream()
	defer ws.Close()
	ready := func() bool {
		select {
		case <-ws.Ready():
			return true
		default:
			return false
		}
	}
	if ws.Share() {
		t.Fatal("shared without a notify function")
	}
	notified := 0
	ws.SetNotify(func() { notified++ })
	if _, err := ws.Watch(WatchOptions{Key: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	if ws.Share() {
		t.Fatal("shared with a response queued")
	}
	if !ready() {
		t.Fatal("created response not signalled on Ready")
	}
	out, more := ws.TakeQueued(nil, 8)
	if len(out) != 1 || !out[0].Created || more {
		t.Fatalf("took %v, more %v", out, more)
	}
	if !ws.Share() || !ws.Shared() {
		t.Fatal("not shared with an empty queue")
	}
	e.put("a", "1")
	e.put("a", "2") // joins the waiting response: no second signal
	if notified != 1 || ready() {
		t.Fatalf("notified %d times, Ready signalled %v", notified, ready())
	}
	out, _ = ws.TakeQueued(nil, 8)
	if len(out) != 1 || len(out[0].Events) != 2 {
		t.Fatalf("took %s", fmtResps(out))
	}
	ws.Unshare()
	if ws.Shared() || !ready() {
		t.Fatal("Unshare did not signal Ready")
	}
	e.put("a", "3")
	if notified != 1 || !ready() {
		t.Fatalf("after Unshare: notified %d times, Ready not signalled", notified)
	}
	drain(t, ws)

	// A watcher from history makes the stream lagging: not shared, and a
	// watcher falling behind while shared notifies (the shared sender
	// then hands it back).
	if _, err := ws.Watch(WatchOptions{Key: []byte("a"), StartRev: 2}); err != nil {
		t.Fatal(err)
	}
	ws.TakeQueued(nil, 8)
	if !ws.Lagging() || ws.Share() {
		t.Fatal("shared with a watcher catching up")
	}
	drain(t, ws)
	if ws.Lagging() || !ws.Share() {
		t.Fatal("not shared once caught up")
	}
	n := notified
	e.h.mu.Lock()
	w := ws.watchers[0]
	e.h.unsync(w, w.next)
	e.h.mu.Unlock()
	if notified != n+1 || !ws.Lagging() {
		t.Fatalf("a watcher falling behind while shared: notified %d times (was %d)", notified, n)
	}
}
