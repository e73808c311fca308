package v3rpc

import (
	"runtime"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/metastore-dev/metastore/mvcc"
)

// One sender for the watch streams of a connection. etcd's watch-latency
// workload puts 10 streams of 10 watchers on one connection: with a
// sender per stream, a publish for one put wakes ten goroutines, and on a
// loaded machine each waits its turn for a CPU (a trace measured 76 µs at
// the median from the publish to a sender running, up to a millisecond).
// The shared sender is woken once per publish per connection and sends
// every stream's responses in turn into the connection's buffer, where
// the transport's writer sends them in as few writes as it can.
//
// It only sends what is queued and never waits on one client: a stream
// with a watcher catching up from history, a busy stream holding its
// bursts back (busyBatchInterval), a response that needs fragmenting or
// that its stream's flow-control window cannot take at once go back to
// the stream's own sender (mvcc.WatchStream.Unshare), which handles them
// as before and gives the stream back when its queue is empty. Per
// watcher order holds because a stream has one owner at a time and its
// queue is taken in order; responses taken but not sent are handed over
// (carry) and sent first. Progress notifications are queued by the own
// sender's ticker and sent by whichever owns the stream.

// connSender is a server stream whose transport lets one goroutine send
// for several streams of a connection (the lean transport's); the stream
// wrappers on the way pass it through.
type connSender interface {
	// SendConn identifies the stream's connection (nil: the inner
	// stream is not a connSender).
	SendConn() any
	// TrySendMsg sends m as SendMsg does if the stream's and the
	// connection's windows take it at once; else it sends nothing
	// and returns false.
	TrySendMsg(m any) (bool, error)
}

// sendConnOf is ss's connection when its transport has TrySendMsg, else
// nil.
func sendConnOf(ss any) any {
	if cs, ok := ss.(connSender); ok {
		return cs.SendConn()
	}
	return nil
}

// trySendMsg is ss's TrySendMsg; a stream without one sends and waits.
func trySendMsg(ss grpc.ServerStream, m any) (bool, error) {
	if cs, ok := ss.(connSender); ok {
		return cs.TrySendMsg(m)
	}
	return true, ss.SendMsg(m)
}

func (t typedStream[Req, Resp]) SendConn() any { return sendConnOf(t.ServerStream) }

func (t typedStream[Req, Resp]) TrySendMsg(m any) (bool, error) {
	return trySendMsg(t.ServerStream, m)
}

func (c *countingStream) SendConn() any { return sendConnOf(c.ServerStream) }

func (c *countingStream) TrySendMsg(m any) (bool, error) {
	sent, err := trySendMsg(c.ServerStream, m)
	if sent && err == nil {
		c.mm.msgSent.Inc()
	}
	return sent, err
}

func (l *leaderStream) SendConn() any { return sendConnOf(l.ServerStream) }

func (l *leaderStream) TrySendMsg(m any) (bool, error) { return trySendMsg(l.ServerStream, m) }

// sharedBurst is how many responses the shared sender sends for one
// stream before it moves on to the next ready stream (the stream goes to
// the back of the line): one stream's backlog does not hold up the
// others' first responses.
const sharedBurst = 64

// watchConn is the shared sender of one connection's watch streams.
type watchConn struct {
	key  senderKey
	refs int // streams joined, under watchServer.connsMu

	mu     sync.Mutex
	queue  []*serverWatchStream // streams with responses, in the order they came
	wake   chan struct{}
	stop   chan struct{}
	buf    []mvcc.WatchResponse // run's
	others []*serverWatchStream // run's spare queue
}

// senderKey names a shared sender: a connection's streams are spread
// over up to GOMAXPROCS of them, so that their work can still run on
// every CPU.
type senderKey struct {
	conn any
	lane int
}

// joinConn returns a shared sender of connection conn for a new stream,
// started with its first stream.
func (ws *watchServer) joinConn(conn any) *watchConn {
	ws.connsMu.Lock()
	defer ws.connsMu.Unlock()
	if ws.conns == nil {
		ws.conns = make(map[any]*watchConn)
		ws.connStreams = make(map[any]int)
	}
	key := senderKey{conn, ws.connStreams[conn] % runtime.GOMAXPROCS(0)}
	ws.connStreams[conn]++
	wc := ws.conns[key]
	if wc == nil {
		wc = &watchConn{key: key, wake: make(chan struct{}, 1), stop: make(chan struct{})}
		ws.conns[key] = wc
		go wc.run()
	}
	wc.refs++
	return wc
}

// leaveConn stops a shared sender with its last stream.
func (ws *watchServer) leaveConn(wc *watchConn) {
	ws.connsMu.Lock()
	defer ws.connsMu.Unlock()
	conn := wc.key.conn
	if ws.connStreams[conn]--; ws.connStreams[conn] == 0 {
		delete(ws.connStreams, conn)
	}
	if wc.refs--; wc.refs == 0 {
		delete(ws.conns, wc.key)
		close(wc.stop)
	}
}

// ready queues sws for the shared sender (mvcc's notify: it never blocks).
func (wc *watchConn) ready(sws *serverWatchStream) {
	if !sws.inReady.CompareAndSwap(false, true) {
		return
	}
	wc.mu.Lock()
	wc.queue = append(wc.queue, sws)
	wc.mu.Unlock()
	select {
	case wc.wake <- struct{}{}:
	default:
	}
}

func (wc *watchConn) run() {
	for {
		select {
		case <-wc.wake:
		case <-wc.stop:
			return
		}
		for {
			// The queue and its spare swap: ready appends to one while
			// run goes through the other.
			wc.mu.Lock()
			batch := wc.queue
			if len(batch) == 0 {
				wc.mu.Unlock()
				break
			}
			wc.queue = wc.others[:0]
			wc.mu.Unlock()
			for i, sws := range batch {
				batch[i] = nil
				// Cleared first: a response queued from now on
				// queues the stream again.
				sws.inReady.Store(false)
				wc.send(sws)
			}
			wc.others = batch[:0]
		}
	}
}

// send sends what sws's queue holds, up to sharedBurst responses, or hands
// the stream back to its own sender.
func (wc *watchConn) send(sws *serverWatchStream) {
	sws.sendMu.Lock()
	defer sws.sendMu.Unlock()
	st := sws.stream
	if sws.gone || !st.Shared() {
		return
	}
	if st.Lagging() || sws.lingerFor() > 0 {
		st.Unshare()
		return
	}
	sws.busy = st.Pushes()-sws.endPushes >= busyBacklog
	sent := 0
	for {
		out, more := st.TakeQueued(wc.buf[:0], takeMaxShared)
		for i := range out {
			if !sws.trySend(&out[i]) {
				sws.carry = append(sws.carry, out[i:]...)
				clear(out)
				wc.buf = out[:0]
				st.Unshare()
				return
			}
		}
		clear(out)
		wc.buf = out[:0]
		sent += len(out)
		if !more {
			break
		}
		if sent >= sharedBurst {
			wc.ready(sws)
			return
		}
	}
	sws.lastBurst, sws.endPushes = time.Now(), st.Pushes()
	if st.Lagging() || sws.busy {
		st.Unshare()
	}
}

// takeMaxShared is how many responses the shared sender takes at once.
const takeMaxShared = 16
