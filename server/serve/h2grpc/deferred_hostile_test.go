package h2grpc

import (
	"bytes"
	"context"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// heldCall is a call Defer took and the test runs when it chooses.
type heldCall struct {
	ctx context.Context
	run func(context.Context)
}

// holdDefer is a server whose Defer takes every unary call and hands it
// to the test on the returned channel.
func holdDefer() (*Server, chan heldCall) {
	held := make(chan heldCall, 4)
	s := NewServer(Options{Codec: protoCodec(), Defer: func(ctx context.Context, _ string, _ []byte, run func(context.Context)) bool {
		held <- heldCall{ctx, run}
		return true
	}})
	return s, held
}

// TestDeferredCallConnClosed: a deferred call whose connection closes
// before its round runs sees its context canceled, and running it then
// sends nothing and leaves nothing behind (goleak), Stop included.
func TestDeferredCallConnClosed(t *testing.T) {
	s, held := holdDefer()
	fr, nc := rawLean(t, s)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/grpc.testing.TestService/UnaryCall"},
		{":authority", "x"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
	fr.WriteData(1, true, []byte{0, 0, 0, 0, 0})
	h := <-held
	nc.Close()
	<-h.ctx.Done()
	h.run(h.ctx)
	s.Stop()
}

// TestDeferredCallGracefulStop: GracefulStop waits for a call Defer holds
// and the client gets its answer once it runs.
func TestDeferredCallGracefulStop(t *testing.T) {
	s, held := holdDefer()
	testpb.RegisterTestServiceServer(s, &testService{})
	_, c, _ := run(t, transport{"lean", s.Serve, s.Stop, s.GracefulStop})
	errc := make(chan error, 1)
	go func() {
		r, err := c.UnaryCall(context.Background(), &testpb.SimpleRequest{ResponseSize: 3})
		if err == nil && len(r.Payload.Body) != 3 {
			err = context.DeadlineExceeded
		}
		errc <- err
	}()
	h := <-held
	stopped := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
		t.Fatal("GracefulStop returned with a deferred call waiting")
	case <-time.After(50 * time.Millisecond): // only a failure would end it sooner
	}
	h.run(h.ctx)
	if err := <-errc; err != nil {
		t.Fatalf("the deferred call: %v", err)
	}
	<-stopped
}
