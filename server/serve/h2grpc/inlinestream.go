package h2grpc

import (
	"context"
	"io"
	"time"
)

// A streaming call costs a goroutine (a worker's, or a new one) that parks
// in RecvMsg between messages: each message wakes it and each reply wakes
// the writer. For a stream whose every answer is short and never waits (a
// lease keep-alive renewal), that hand-off is most of the call's cost; and
// clientv3's KeepAliveOnce opens a stream per renewal. Options.InlineStream
// lets the connection's reader answer such a stream's messages itself, as
// Options.Inline does for a unary call. A message whose answer would wait
// (the handler says so, or the reply does not fit the windows at once) is
// taken over by a goroutine, which answers it and every message queued
// behind it, in order, then hands the stream back to the reader.

// StreamHandler answers the messages of a streaming call one by one
// (Options.InlineStream). Its methods may run on the connection's reader,
// so they never block there.
type StreamHandler interface {
	// Open starts a call when its headers arrive (on the reader); an
	// error ends the call with that error's status.
	Open(ctx context.Context) error
	// Message answers one request message (its encoding, uncompressed):
	// the reply to send, or nil to send nothing. onReader: the call runs
	// on the connection's reader and must not wait; it answers ok false
	// instead, having changed nothing, and is called again with the same
	// message on a goroutine (onReader false). An error ends the call
	// with that error's status.
	Message(ctx context.Context, msg []byte, onReader bool) (reply any, ok bool, err error)
	// Ended reports the end of the call Open was called for, once: err
	// is nil when the call ended OK, otherwise what it ended with
	// (context.Canceled when the client reset it or the connection
	// closed). It may run with the connection's lock held: it must not
	// call back into the transport.
	Ended(ctx context.Context, start time.Time, err error)
	// Stopped is the error a call still open ends with when the server
	// stops gracefully: nothing of the handler runs between messages to
	// end it, and an open call would hold the stop up.
	Stopped() error
}

// inlineHandler is the StreamHandler for a stream call of path, or nil.
func (s *Server) inlineHandler(rq *request) StreamHandler {
	if s.o.InlineStream == nil || rq.m.stream == nil || rq.recvCompress != "" && rq.recvCompress != "identity" {
		return nil
	}
	return s.o.InlineStream(rq.path)
}

// inlineOpen starts an inline call on the reader, after its headers.
func (st *stream) inlineOpen() {
	if err := st.inl.Open(st.ctx); err != nil {
		st.inlineFinish(err, false)
		return
	}
	st.inlineRecv()
}

// inlineRecv answers, on the reader, the messages received whole; it
// returns when none is left, or a goroutine took the stream over.
func (st *stream) inlineRecv() {
	for {
		st.rmu.Lock()
		if st.inlBusy || st.inlEnded.Load() {
			st.rmu.Unlock()
			return
		}
		msg, update, err := st.nextMsgLocked()
		st.rmu.Unlock()
		if update > 0 {
			st.windowUpdate(update)
		}
		if err != nil {
			st.inlineFinish(err, true)
			return
		}
		if msg == nil {
			return
		}
		reply, ok, err := st.inl.Message(st.ctx, msg, true)
		if !ok {
			st.inlineLater(msg, nil)
			return
		}
		if err != nil {
			st.inlineFinish(err, false)
			return
		}
		if reply == nil {
			continue
		}
		st.onReader = true
		err = st.send(reply, false)
		st.onReader = false
		if err == errWouldWait {
			st.inlineLater(nil, reply)
			return
		}
		if err != nil {
			st.inlineFinish(err, false)
			return
		}
	}
}

// inlineLater hands the stream to a goroutine that answers msg (or sends
// reply), then every message queued behind it.
func (st *stream) inlineLater(msg []byte, reply any) {
	st.rmu.Lock()
	st.inlBusy = true
	st.rmu.Unlock()
	go st.inlineRun(msg, reply)
}

// inlineRun is the goroutine of inlineLater: it may wait.
func (st *stream) inlineRun(msg []byte, reply any) {
	for {
		if msg != nil {
			var err error
			if reply, _, err = st.inl.Message(st.ctx, msg, false); err != nil {
				st.inlineFinish(err, false)
				return
			}
		}
		if reply != nil {
			if err := st.send(reply, false); err != nil {
				st.inlineFinish(err, false)
				return
			}
		}
		reply = nil
		st.rmu.Lock()
		next, update, err := st.nextMsgLocked()
		if next == nil && err == nil {
			st.inlBusy = false // back to the reader
		}
		st.rmu.Unlock()
		if update > 0 {
			st.windowUpdate(update)
		}
		if err != nil {
			st.inlineFinish(err, false)
			return
		}
		if next == nil {
			// A reset seen by the reader while this goroutine had the
			// stream left the end to it.
			st.c.mu.Lock()
			gone := st.reset || st.c.closed
			st.c.mu.Unlock()
			if gone {
				st.inlineEnd(context.Canceled)
			}
			return
		}
		msg = next
	}
}

// inlineFinish ends an inline call with err (io.EOF: the client ended the
// stream, so OK). On the reader (mayDefer) an OK end waits while more
// frames are buffered: a client that closes its side and then resets the
// stream (clientv3's KeepAliveOnce) has no use for the trailers, and
// neither side then pays for them.
func (st *stream) inlineFinish(err error, mayDefer bool) {
	if err == io.EOF {
		c := st.c
		if mayDefer && c.frameBuffered() {
			c.ends = append(c.ends, st)
			return
		}
		st.finish(statusOK)
		st.inlineEnd(nil)
		return
	}
	st.finish(statusOf(err))
	st.inlineEnd(err)
}

// finishEnds writes the OK trailers inlineFinish put off, on the reader
// once it has read every buffered frame; a stream reset meanwhile gets
// none.
func (c *conn) finishEnds() {
	for i, st := range c.ends {
		st.finish(statusOK)
		st.inlineEnd(nil)
		c.ends[i] = nil
	}
	c.ends = c.ends[:0]
}

// drainInline ends the connection's inline calls with their handlers'
// Stopped errors (GracefulStop).
func (c *conn) drainInline() {
	c.mu.Lock()
	var open []*stream
	for _, st := range c.streams {
		if st.inl != nil {
			open = append(open, st)
		}
	}
	c.mu.Unlock()
	for _, st := range open {
		st.inlineFinish(st.inl.Stopped(), false)
	}
}

// inlineEnd reports the call's end to its handler, once.
func (st *stream) inlineEnd(err error) {
	if st.inlEnded.CompareAndSwap(false, true) {
		st.inl.Ended(st.ctx, st.inlStart, err)
	}
}

// inlineResetLocked reports the end of an inline call reset or closed
// under it, unless a goroutine has the stream (it reports it); c.mu is
// held.
func (st *stream) inlineResetLocked() {
	if st.inl == nil {
		return
	}
	st.rmu.Lock()
	busy := st.inlBusy
	st.rmu.Unlock()
	if !busy {
		st.inlineEnd(context.Canceled)
	}
}
