package h2grpc

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// callCtx is a call's context, held inside its stream: it answers for the
// request metadata and the grpc.ServerTransportStream itself and is
// canceled by the transport, so a call needs none of the four allocations
// of context.WithCancel, metadata.NewIncomingContext and
// grpc.NewContextWithServerTransportStream.
//
// Cancellation is a stdlib cancelCtx made the first time someone asks for
// Done (a select on it, or a context derived from this one), or at once
// for a call with a deadline; from then on Done, Err, Deadline and the
// stdlib's own lookups (Cause, parent-child registration) are that
// context's, so the semantics are the stdlib's exactly. A call whose
// handler never waits on its context (a serializable Range) never makes
// one.
type callCtx struct {
	parent context.Context // the connection's: the peer; never canceled
	st     *stream
	md     metadata.MD

	mu       sync.Mutex
	canceled atomic.Bool // cancel was called (before or after inner)
	hasInner atomic.Bool // inner and stop are set (under mu, before this)
	inner    context.Context
	stop     context.CancelFunc
}

// grpc-go's context keys are unexported; keyProbe learns them from the
// lookups metadata.ValueFromIncomingContext and
// grpc.ServerTransportStreamFromContext make, and they are checked against
// contexts the grpc functions build. When a grpc-go release looks them
// up differently the keys stay nil and calls get grpc-go's own value
// contexts (withValues), which is only slower.
type keyProbe struct {
	context.Context
	key any
}

func (p *keyProbe) Value(k any) any { p.key = k; return nil }

var mdKey, streamKey = func() (any, any) {
	p := &keyProbe{Context: context.Background()}
	metadata.ValueFromIncomingContext(p, "k")
	mk := p.key
	p.key = nil
	grpc.ServerTransportStreamFromContext(p)
	sk := p.key
	md := metadata.MD{"k": {"v"}}
	if mk == nil || !sameMD(metadata.NewIncomingContext(context.Background(), md).Value(mk), md) {
		mk = nil
	}
	probe := &stream{path: "/probe"}
	if sk == nil || grpc.NewContextWithServerTransportStream(context.Background(), probe).Value(sk) != any(probe) {
		sk = nil
	}
	return mk, sk
}()

func sameMD(v any, md metadata.MD) bool {
	got, ok := v.(metadata.MD)
	return ok && len(got) == len(md) && got["k"] != nil && &got["k"][0] == &md["k"][0]
}

// withValues is the context a handler gets: c itself, or c under grpc-go's
// value contexts for the keys the probe did not learn.
func (c *callCtx) withValues() context.Context {
	var ctx context.Context = c
	if mdKey == nil {
		ctx = metadata.NewIncomingContext(ctx, c.md)
	}
	if streamKey == nil {
		ctx = grpc.NewContextWithServerTransportStream(ctx, c.st)
	}
	return ctx
}

// setDeadline gives the call a deadline; before the context is shared.
func (c *callCtx) setDeadline(d time.Duration) {
	c.inner, c.stop = context.WithTimeout(c.parent, d)
	c.hasInner.Store(true)
}

// cancel cancels the call (the transport's: RST_STREAM, the end of the
// call, the connection closing).
func (c *callCtx) cancel() {
	c.mu.Lock()
	c.canceled.Store(true)
	has := c.hasInner.Load()
	c.mu.Unlock()
	if has {
		c.stop()
	}
}

// cancelCtx returns the stdlib context behind c, making it if need be.
func (c *callCtx) cancelCtx() context.Context {
	if c.hasInner.Load() {
		return c.inner
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.hasInner.Load() {
		c.inner, c.stop = context.WithCancel(c.parent)
		if c.canceled.Load() {
			c.stop()
		}
		c.hasInner.Store(true)
	}
	return c.inner
}

func (c *callCtx) Deadline() (time.Time, bool) {
	if c.hasInner.Load() {
		return c.inner.Deadline()
	}
	return time.Time{}, false
}

func (c *callCtx) Done() <-chan struct{} { return c.cancelCtx().Done() }

func (c *callCtx) Err() error {
	if c.hasInner.Load() {
		return c.inner.Err()
	}
	if c.canceled.Load() {
		return context.Canceled
	}
	return nil
}

func (c *callCtx) Value(key any) any {
	if key == mdKey && mdKey != nil {
		return c.md
	}
	if key == streamKey && streamKey != nil {
		return c.st
	}
	if c.hasInner.Load() {
		// The stdlib finds its cancelCtx through Value.
		return c.inner.Value(key)
	}
	return c.parent.Value(key)
}

func (c *callCtx) String() string { return "h2grpc.callCtx" }

// FirstIncomingValue is the first of metadata.ValueFromIncomingContext(c,
// key), found the same way (the key as given, then case-insensitively),
// without the copy that function makes. A handler reads it through an
// interface of its own (the context may be any transport's).
func (c *callCtx) FirstIncomingValue(key string) (string, bool) {
	if v, ok := c.md[key]; ok {
		if len(v) == 0 {
			return "", false
		}
		return v[0], true
	}
	for k, v := range c.md {
		if strings.EqualFold(k, key) {
			if len(v) == 0 {
				return "", false
			}
			return v[0], true
		}
	}
	return "", false
}
