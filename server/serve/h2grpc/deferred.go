package h2grpc

import "context"

// A call that must first wait for something the application signals (a
// linearizable read waits for its read round) would hold a worker parked
// meanwhile: a hand-off to the worker, a park and a wake-up per call, each
// of which can cost a futex call. Options.Defer takes such a call off the
// reader without a worker: the application runs it when it may, on a
// goroutine of its own that runs many such calls in turn, so the call is
// run as an inline one (its reply written only if it fits at once,
// otherwise a goroutine sends it): that goroutine must not wait on one
// client.

// deferCall hands the unary call st, whose request is complete, to
// Options.Defer, and reports whether Defer took it.
func (s *Server) deferCall(st *stream) bool {
	if s.o.Defer == nil || len(st.rbuf) < 5 || st.rbuf[0] != 0 {
		return false // uncompressed only: Defer judges the message bytes
	}
	return s.o.Defer(st.ctx, st.m.path, st.rbuf[5:], st.runDeferred)
}

// runDeferred runs a deferred call in ctx, which the application derived
// from the call's context.
func (st *stream) runDeferred(ctx context.Context) {
	st.ctx = ctx
	st.onReader = true
	st.run()
}
