package h2grpc

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// deferBatcher is an Options.Defer that runs the calls it takes in
// batches on a goroutine of its own, each in a context whose metadata
// says so, as a read round's goroutine runs the reads that waited for it.
type deferBatcher struct {
	mu    sync.Mutex
	calls []func()
	taken atomic.Int64
	stop  chan struct{}
	done  chan struct{}
}

func (b *deferBatcher) Defer(ctx context.Context, path string, msg []byte, run func(context.Context)) bool {
	var r testpb.SimpleRequest
	if path != "/grpc.testing.TestService/UnaryCall" || proto.Unmarshal(msg, &r) != nil {
		panic(fmt.Sprintf("Defer(%q, %x)", path, msg))
	}
	if r.ResponseSize%2 == 1 {
		return false // odd sizes run as usual
	}
	b.taken.Add(1)
	b.mu.Lock()
	b.calls = append(b.calls, func() {
		run(metadata.NewIncomingContext(ctx, metadata.Pairs("echo-header", "deferred")))
	})
	b.mu.Unlock()
	return true
}

func (b *deferBatcher) loop() {
	defer close(b.done)
	t := time.NewTicker(200 * time.Microsecond)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-b.stop:
			return
		}
		b.mu.Lock()
		calls := b.calls
		b.calls = nil
		b.mu.Unlock()
		for _, run := range calls {
			run()
		}
	}
}

// TestDeferredCalls: calls Defer takes run later, in the context Defer's
// runner gives them, on the runner's goroutine, and answer as any call
// (replies too large to send at once included, and errors); calls it
// declines run as usual, on the same connection at the same time.
func TestDeferredCalls(t *testing.T) {
	b := &deferBatcher{stop: make(chan struct{}), done: make(chan struct{})}
	go b.loop()
	defer func() { close(b.stop); <-b.done }()
	s := NewServer(Options{Codec: protoCodec(), Defer: b.Defer})
	testpb.RegisterTestServiceServer(s, &testService{blocked: make(chan context.Context, 1)})
	cc, c, _ := run(t, transport{"lean", s.Serve, s.Stop, s.GracefulStop})
	defer cc.Close()
	var wg sync.WaitGroup
	errc := make(chan error, 20)
	for g := range 20 {
		wg.Go(func() {
			for i := range 30 {
				n := int32(g*100 + i)
				if i == 8 {
					n = 200 << 10 // sent by a goroutine
				}
				ctx := metadata.AppendToOutgoingContext(context.Background(), "echo-header", "asked")
				var hdr metadata.MD
				r, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: n}, grpc.Header(&hdr))
				want := "asked"
				if n%2 == 0 {
					want = "deferred"
				}
				if err != nil || len(r.Payload.Body) != int(n) || len(hdr.Get("echo-header")) != 1 || hdr.Get("echo-header")[0] != want {
					errc <- fmt.Errorf("call %d: %v, header %v", n, err, hdr.Get("echo-header"))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	_, err := c.UnaryCall(context.Background(), &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: 5, Message: "gone"}})
	if got := statusString(err); got != `NotFound: "gone"` {
		t.Errorf("a deferred call's error: %s", got)
	}
	if b.taken.Load() != 301 {
		t.Fatalf("Defer took %d calls, want 301", b.taken.Load())
	}
}
