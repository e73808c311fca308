package h2grpc

import "errors"

// A call handed to a worker costs two goroutine switches that can each
// wake a thread (a futex call): the reader's hand-off and the worker's
// park. For a call that never waits and takes a few microseconds (a
// serializable one-key Get: about what the hand-off costs) the reader runs
// it itself when Options.Inline says so (measured: 1.2–1.5 µs less server
// CPU per Get out of 7.5). The connection reads nothing meanwhile, so the
// call must not wait on the reader: its reply is written only if the flow
// control windows and the unflushed output leave room for it at once
// (WINDOW_UPDATEs that would make room are read by this very goroutine);
// otherwise a goroutine sends it, as a worker would.

// inlineSendMax bounds a reply sent from the reader.
const inlineSendMax = 64 << 10

// errWouldWait is send's answer on the reader when the reply does not fit
// at once; nothing was written.
var errWouldWait = errors.New("h2grpc: the reply would wait for room")

// inline reports whether the unary call st, whose request is complete,
// runs on the reader.
func (s *Server) inline(st *stream) bool {
	// Uncompressed only: Inline judges the message bytes.
	return s.o.Inline != nil && len(st.rbuf) >= 5 && st.rbuf[0] == 0 && s.o.Inline(st.m.path, st.rbuf[5:])
}

// fitsLocked reports whether a message of n bytes (with its prefix) can be
// queued on st without waiting; c.mu is held.
func (st *stream) fitsLocked(n int) bool {
	c := st.c
	return n <= inlineSendMax && int64(n) <= st.sendWindow && int64(n) <= c.sendWindow &&
		len(c.wbuf)+2*inlineSendMax <= highWater
}

// sendLater sends a unary reply that did not fit from the reader.
func (st *stream) sendLater(reply any) {
	st.onReader = false
	go func() {
		if err := st.send(reply, true); err != nil {
			st.finish(statusOf(err))
		}
	}()
}
