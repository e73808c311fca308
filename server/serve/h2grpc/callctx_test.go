package h2grpc

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// The probe must find grpc-go's keys in the grpc-go this module builds
// with, or every call pays the value contexts again.
func TestCallCtxKeysProbed(t *testing.T) {
	if mdKey == nil || streamKey == nil {
		t.Fatalf("grpc-go's context keys not learned: metadata %v, stream %v", mdKey, streamKey)
	}
}

type ctxKey struct{}

// newCallCtx is a call context as newStream makes one: parent carries the
// peer and another value.
func newCallCtx(deadline time.Duration) (*stream, context.Context) {
	parent := peer.NewContext(context.WithValue(context.Background(), ctxKey{}, "v"), &peer.Peer{})
	st := &stream{path: "/s/m"}
	st.cctx.parent, st.cctx.st, st.cctx.md = parent, st, metadata.MD{"a": {"1"}}
	if deadline != 0 {
		st.cctx.setDeadline(deadline)
	}
	st.ctx = st.cctx.withValues()
	return st, st.ctx
}

// observation is what a handler can see of a context.
type observation struct {
	err, cause    error
	hasDeadline   bool
	closed        bool
	childErr      error
	childCause    error
	afterFuncRan  bool
	value, method string
	md            string
	peer          bool
}

func observe(t *testing.T, ctx context.Context, child context.Context, ran chan struct{}) observation {
	t.Helper()
	var o observation
	o.err, o.cause = ctx.Err(), context.Cause(ctx)
	_, o.hasDeadline = ctx.Deadline()
	select {
	case <-ctx.Done():
		o.closed = true
	default:
	}
	if child != nil {
		if o.closed {
			<-child.Done()
		}
		o.childErr, o.childCause = child.Err(), context.Cause(child)
	}
	if ran != nil && o.closed {
		select {
		case <-ran:
			o.afterFuncRan = true
		case <-time.After(5 * time.Second):
		}
	}
	o.value, _ = ctx.Value(ctxKey{}).(string)
	o.method, _ = grpc.Method(ctx)
	o.md = fmt.Sprint(metadata.ValueFromIncomingContext(ctx, "a"))
	_, o.peer = peer.FromContext(ctx)
	return o
}

// stdCallCtx is the same call context built the stdlib's way.
func stdCallCtx(deadline time.Duration, st *stream) (context.Context, context.CancelFunc) {
	parent := peer.NewContext(context.WithValue(context.Background(), ctxKey{}, "v"), &peer.Peer{})
	var ctx context.Context
	var cancel context.CancelFunc
	if deadline != 0 {
		ctx, cancel = context.WithTimeout(parent, deadline)
	} else {
		ctx, cancel = context.WithCancel(parent)
	}
	ctx = metadata.NewIncomingContext(ctx, metadata.MD{"a": {"1"}})
	return grpc.NewContextWithServerTransportStream(ctx, st), cancel
}

// TestCallCtxLikeStdlib: whatever a handler does with its context (wait on
// it before or after the cancel, derive from it, AfterFunc), it sees what
// it would see with context.WithCancel/WithTimeout and grpc-go's values.
func TestCallCtxLikeStdlib(t *testing.T) {
	type step int
	const (
		doneBefore step = 1 << iota // Done called before the cancel
		derive                      // a child context and an AfterFunc before the cancel
		cancelIt                    // the transport cancels
		wrapValue                   // the child hangs under a WithValue
	)
	for _, deadline := range []time.Duration{0, time.Hour, 20 * time.Millisecond} {
		for steps := step(0); steps < 16; steps++ {
			run := func(ctx context.Context, cancel func()) observation {
				var child context.Context
				var ran chan struct{}
				if steps&doneBefore != 0 {
					ctx.Done()
				}
				if steps&derive != 0 {
					base := ctx
					if steps&wrapValue != 0 {
						base = context.WithValue(ctx, struct{ k int }{1}, 1)
					}
					var cc context.CancelFunc
					child, cc = context.WithCancel(base)
					t.Cleanup(cc)
					ran = make(chan struct{})
					context.AfterFunc(ctx, func() { close(ran) })
				}
				if steps&cancelIt != 0 {
					cancel()
				}
				if deadline == 20*time.Millisecond {
					<-ctx.Done()
				}
				return observe(t, ctx, child, ran)
			}
			st, ours := newCallCtx(deadline)
			got := run(ours, st.cancel)
			std, cancel := stdCallCtx(deadline, st)
			want := run(std, cancel)
			if got.method != "/s/m" {
				t.Fatalf("grpc.Method: %q", got.method)
			}
			if got != want {
				t.Errorf("deadline %v steps %04b:\n got %+v\nwant %+v", deadline, steps, got, want)
			}
		}
	}
}

// A context derived from a call's does not cost a goroutine (the stdlib
// starts one per child of a context it cannot see a cancelCtx in).
func TestCallCtxChildNoGoroutine(t *testing.T) {
	st, ctx := newCallCtx(0)
	before := runtime.NumGoroutine()
	var cancels []context.CancelFunc
	for range 50 {
		_, c := context.WithCancel(context.WithValue(ctx, ctxKey{}, 2))
		cancels = append(cancels, c)
	}
	if n := runtime.NumGoroutine() - before; n > 5 {
		t.Fatalf("%d goroutines for 50 children", n)
	}
	st.cancel()
	for _, c := range cancels {
		c()
	}
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Fatalf("Err after cancel: %v", ctx.Err())
	}
}

// FirstIncomingValue finds what metadata.ValueFromIncomingContext finds.
func TestCallCtxFirstIncomingValue(t *testing.T) {
	st, ctx := newCallCtx(0)
	st.cctx.md = metadata.MD{"a": {"1", "2"}, "Mixed-Case": {"m"}, "empty": {}}
	for _, k := range []string{"a", "A", "mixed-case", "Mixed-Case", "empty", "none"} {
		want := metadata.ValueFromIncomingContext(ctx, k)
		v, ok := st.cctx.FirstIncomingValue(k)
		if ok != (len(want) > 0) || ok && v != want[0] {
			t.Errorf("%q: %q %v, want %q", k, v, ok, want)
		}
	}
}
