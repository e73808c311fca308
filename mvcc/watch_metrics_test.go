package mvcc

import "testing"

// TestWatchMetricsGauges: the gauges behind etcd's watch metrics follow
// etcd's semantics: streams and watchers while open (a watcher canceled
// for compaction counts until the client cancels it, as etcd's), slow
// watchers while they catch up, and pending events from being queued until
// taken by the sender or dropped with the stream.
func TestWatchMetricsGauges(t *testing.T) {
	e := newWatchEnv(t, HubOptions{})
	want := func(what string, got, want int64) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %d, want %d (%+v)", what, got, want, e.h.Metrics())
		}
	}
	e.put("a", "1") // 2
	e.put("b", "1") // 3
	ws := e.h.NewStream()
	want("streams", e.h.Metrics().Streams, 1)
	idA, _ := ws.Watch(WatchOptions{Key: []byte("a")})
	ws.Watch(WatchOptions{Key: []byte("b"), StartRev: 1})
	m := e.h.Metrics()
	want("watchers", m.Watchers, 2)
	want("slow watchers", m.Lagging, 1)
	want("pending before any event", m.EventsPending, 0)

	e.put("a", "2") // 4
	e.put("a", "3") // 5: joins the waiting response
	want("pending", e.h.Metrics().EventsPending, 2)
	sent := e.h.Metrics().EventsSent
	drain(t, ws) // b catches up (rev 3) too
	m = e.h.Metrics()
	want("pending after the sender took them", m.EventsPending, 0)
	want("slow watchers after catching up", m.Lagging, 0)
	want("events sent", m.EventsSent-sent, 3)

	e.put("a", "4") // 6
	ws.Cancel(idA)
	m = e.h.Metrics()
	want("watchers after a cancel", m.Watchers, 1)
	want("pending after a cancel (still to be sent)", m.EventsPending, 1)
	drain(t, ws)

	// Compaction: the watcher from rev 1 is canceled by the server but
	// stays counted until the client cancels it.
	e.compact(5)
	idC, _ := ws.Watch(WatchOptions{Key: []byte("a"), StartRev: 1})
	want("slow watchers before the compaction is seen", e.h.Metrics().Lagging, 1)
	drain(t, ws)
	m = e.h.Metrics()
	want("slow watchers once canceled for compaction", m.Lagging, 0)
	want("watchers once canceled for compaction", m.Watchers, 2)
	ws.Cancel(idC)
	want("watchers after the client's cancel", e.h.Metrics().Watchers, 1)

	e.put("b", "2") // 7: never taken
	want("pending before close", e.h.Metrics().EventsPending, 1)
	ws.Close()
	m = e.h.Metrics()
	want("streams after close", m.Streams, 0)
	want("watchers after close", m.Watchers, 0)
	want("pending after close", m.EventsPending, 0)
}
