package h2grpc

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// TestInlineCalls: calls run on the reader answer as on a worker (payloads
// small and larger than a reply the reader sends itself, errors, metadata),
// concurrently on one connection, and Inline sees each call's method and
// request bytes.
func TestInlineCalls(t *testing.T) {
	var asked atomic.Int64
	o := Options{Inline: func(path string, msg []byte) bool {
		var r testpb.SimpleRequest
		if path != "/grpc.testing.TestService/UnaryCall" || proto.Unmarshal(msg, &r) != nil {
			panic(fmt.Sprintf("Inline(%q, %x)", path, msg))
		}
		asked.Add(1)
		return true
	}}
	both(t, o, func(t *testing.T, _ *grpc.ClientConn, c testpb.TestServiceClient) string {
		ctx := metadata.AppendToOutgoingContext(context.Background(), "echo-header", "v1", "echo-bin", "\x00\xffbin")
		var hdr, trl metadata.MD
		resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 3}, grpc.Header(&hdr), grpc.Trailer(&trl))
		if err != nil {
			t.Fatal(err)
		}
		out := fmt.Sprintf("%s %v %q", resp.Payload.Body, hdr.Get("echo-header"), trl.Get("echo-bin"))
		var wg sync.WaitGroup
		errc := make(chan error, 20)
		for g := range 20 {
			wg.Go(func() {
				for i := range 30 {
					n := int32(g*100 + i)
					if i == 7 {
						n = 200 << 10 // sent by a goroutine
					}
					r, err := c.UnaryCall(context.Background(), &testpb.SimpleRequest{ResponseSize: n})
					if err != nil || len(r.Payload.Body) != int(n) {
						errc <- fmt.Errorf("call %d: %v", n, err)
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
		_, err = c.UnaryCall(context.Background(), &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: 5, Message: "gone"}})
		return out + " " + statusString(err)
	})
	if asked.Load() == 0 {
		t.Fatal("Inline was never asked")
	}
}

// TestInlineNeverBlocksReader: a client that grants no connection window
// beyond HTTP/2's initial 64 KiB gets its replies queued, and the
// connection's reader keeps serving it meanwhile (a PING is answered)
// rather than waiting on the reader for a WINDOW_UPDATE only it can read.
func TestInlineNeverBlocksReader(t *testing.T) {
	s := NewServer(Options{Codec: protoCodec(), Inline: func(string, []byte) bool { return true }})
	fr, _ := rawLean(t, s)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/grpc.testing.TestService/UnaryCall"},
		{":authority", "x"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	req, err := proto.Marshal(&testpb.SimpleRequest{ResponseSize: 30 << 10})
	if err != nil {
		t.Fatal(err)
	}
	msg := append([]byte{0, 0, 0, 0, byte(len(req))}, req...)
	const calls = 6 // 180 KiB of replies against a 64 KiB window
	for i := range calls {
		id := uint32(2*i + 1)
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true})
		fr.WriteData(id, true, msg)
	}
	fr.WritePing(false, [8]byte{7})
	readUntilPing(t, fr) // fails unless the reader answers the PING
}
