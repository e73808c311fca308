package h2grpc

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// echoInline answers FullDuplexCall messages with "inline:" and the
// payload, on the reader, except a payload "slow", which it answers only
// off the reader once release is closed; "fail" ends the call.
type echoInline struct {
	release chan struct{}
	waiting chan struct{} // a "slow" message is waiting off the reader

	mu      sync.Mutex
	opened  int
	ended   []string
	onRdr   int // messages answered on the reader
	offRdr  int // messages answered off it
	refused bool
}

func (e *echoInline) Open(context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.opened++
	if e.refused {
		return status.Error(codes.ResourceExhausted, "refused at open")
	}
	return nil
}

func (e *echoInline) Message(ctx context.Context, msg []byte, onReader bool) (any, bool, error) {
	var in testpb.StreamingOutputCallRequest
	if err := proto.Unmarshal(msg, &in); err != nil {
		return nil, true, err
	}
	body := string(in.GetPayload().GetBody())
	switch {
	case body == "slow" && onReader:
		return nil, false, nil
	case body == "slow":
		e.waiting <- struct{}{}
		select {
		case <-e.release:
		case <-ctx.Done():
			return nil, true, ctx.Err()
		}
	case body == "fail":
		return nil, true, status.Error(codes.FailedPrecondition, "failed by request")
	case body == "big":
		body = strings.Repeat("x", 30<<10)
	}
	e.mu.Lock()
	if onReader {
		e.onRdr++
	} else {
		e.offRdr++
	}
	e.mu.Unlock()
	return &testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: []byte("inline:" + body)}}, true, nil
}

func (e *echoInline) Ended(_ context.Context, start time.Time, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if start.IsZero() {
		panic("Ended without a start time")
	}
	e.ended = append(e.ended, statusOf(err).Code().String())
}

func (e *echoInline) Stopped() error { return status.Error(codes.Unavailable, "stopping") }

func (e *echoInline) endedList() string {
	for range 200 { // Ended of a reset call may trail the client
		e.mu.Lock()
		n := len(e.ended)
		e.mu.Unlock()
		if n >= e.opened {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Join(e.ended, ",")
}

func inlineServer(t *testing.T, e *echoInline) testpb.TestServiceClient {
	_, c := inlineServerStop(t, e)
	return c
}

func inlineServerStop(t *testing.T, e *echoInline) (*Server, testpb.TestServiceClient) {
	s := NewServer(Options{Codec: protoCodec(), InlineStream: func(path string) StreamHandler {
		if path == "/grpc.testing.TestService/FullDuplexCall" {
			return e
		}
		return nil
	}})
	testpb.RegisterTestServiceServer(s, &testService{})
	_, c, _ := run(t, transport{"lean", s.Serve, s.Stop, s.GracefulStop})
	return s, c
}

func sendBody(t *testing.T, st testpb.TestService_FullDuplexCallClient, body string) {
	t.Helper()
	if err := st.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte(body)}}); err != nil {
		t.Fatal(err)
	}
}

func recvBody(st testpb.TestService_FullDuplexCallClient) string {
	r, err := st.Recv()
	if err != nil {
		return statusString(err)
	}
	return string(r.Payload.Body)
}

// TestInlineStream: a stream with an inline handler is answered by it (the
// registered handler, which echoes without the prefix, never runs), many
// messages a stream; one that would wait is answered off the reader with
// the messages behind it in order, while the reader goes on serving other
// calls of the connection; every call's end is reported once, with its
// status.
func TestInlineStream(t *testing.T) {
	e := &echoInline{release: make(chan struct{}), waiting: make(chan struct{}, 1)}
	c := inlineServer(t, e)
	ctx := context.Background()

	// Many messages on one stream, then the client ends it.
	st, err := c.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := range 50 {
		sendBody(t, st, fmt.Sprint(i))
		got = append(got, recvBody(st))
	}
	st.CloseSend()
	if _, err := st.Recv(); err != io.EOF {
		t.Fatalf("after CloseSend: %v, want EOF", err)
	}
	if got[0] != "inline:0" || got[49] != "inline:49" {
		t.Fatalf("answers %q … %q, want the inline handler's", got[0], got[49])
	}

	// A message that waits goes to a goroutine; the ones queued behind
	// it are answered after it, in order, and the reader is free.
	slow, err := c.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sendBody(t, slow, "a")
	if r := recvBody(slow); r != "inline:a" {
		t.Fatalf("first answer %q", r)
	}
	sendBody(t, slow, "slow")
	<-e.waiting
	sendBody(t, slow, "b")
	sendBody(t, slow, "c")
	other, err := c.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sendBody(t, other, "meanwhile")
	if r := recvBody(other); r != "inline:meanwhile" {
		t.Fatalf("another stream while one waits: %q", r)
	}
	if r, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 2}); err != nil || len(r.Payload.Body) != 2 {
		t.Fatalf("unary call while a stream waits: %v", err)
	}
	close(e.release)
	var order []string
	for range 3 {
		order = append(order, recvBody(slow))
	}
	if strings.Join(order, " ") != "inline:slow inline:b inline:c" {
		t.Fatalf("answers after the wait: %q", order)
	}
	// Back on the reader afterwards.
	sendBody(t, slow, "d")
	if r := recvBody(slow); r != "inline:d" {
		t.Fatalf("after the wait: %q", r)
	}
	slow.CloseSend()
	if _, err := slow.Recv(); err != io.EOF {
		t.Fatalf("slow stream end: %v", err)
	}
	other.CloseSend()
	other.Recv()

	// An error ends the call with its status.
	bad, err := c.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sendBody(t, bad, "fail")
	if r := recvBody(bad); r != `FailedPrecondition: "failed by request"` {
		t.Fatalf("failing message: %s", r)
	}

	// A call the client cancels ends Canceled.
	cctx, cancel := context.WithCancel(ctx)
	gone, err := c.FullDuplexCall(cctx)
	if err != nil {
		t.Fatal(err)
	}
	sendBody(t, gone, "x")
	recvBody(gone)
	cancel()

	e.mu.Lock()
	on, off := e.onRdr, e.offRdr
	e.mu.Unlock()
	if on != 50+4 || off != 3 {
		t.Errorf("answered on the reader %d, off it %d; want 54 and 3", on, off)
	}
	if got := e.endedList(); got != "OK,OK,OK,FailedPrecondition,Canceled" {
		t.Errorf("Ended: %s", got)
	}
}

// TestInlineStreamOpenRefused: an error from Open is the call's status,
// and Open's call is reported ended.
func TestInlineStreamOpenRefused(t *testing.T) {
	e := &echoInline{refused: true}
	c := inlineServer(t, e)
	st, err := c.FullDuplexCall(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r := recvBody(st); r != `ResourceExhausted: "refused at open"` {
		t.Fatalf("refused call: %s", r)
	}
	if got := e.endedList(); got != "ResourceExhausted" {
		t.Errorf("Ended: %s", got)
	}
}

// TestInlineStreamKeepAliveOnce: clientv3's KeepAliveOnce pattern — send
// one message, receive the answer, close the sending side and cancel —
// over and over on one connection, concurrently: every answer arrives and
// every call is reported ended once.
func TestInlineStreamKeepAliveOnce(t *testing.T) {
	e := &echoInline{}
	c := inlineServer(t, e)
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 100 {
				ctx, cancel := context.WithCancel(context.Background())
				st, err := c.FullDuplexCall(ctx)
				if err == nil {
					err = st.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte(fmt.Sprint(g, i))}})
				}
				var r *testpb.StreamingOutputCallResponse
				if err == nil {
					r, err = st.Recv()
				}
				if err == nil && string(r.Payload.Body) != fmt.Sprint("inline:", g, i) {
					err = fmt.Errorf("answer %q", r.Payload.Body)
				}
				if err == nil {
					err = st.CloseSend()
				}
				cancel()
				if err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	ended := e.endedList()
	n := strings.Count(ended, ",") + 1
	if n != 800 {
		t.Errorf("%d ends reported, want 800", n)
	}
	for _, s := range strings.Split(ended, ",") {
		if s != "OK" && s != "Canceled" {
			t.Fatalf("an end %q", s)
		}
	}
}

// rawInline is a raw HTTP/2 connection to a server whose FullDuplexCall
// e answers inline, with the header block and a request's frame.
func rawInline(t *testing.T, e *echoInline, body string) (*http2.Framer, net.Conn, []byte, []byte) {
	s := NewServer(Options{Codec: protoCodec(), InlineStream: func(string) StreamHandler { return e }})
	fr, nc := rawLean(t, s)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/grpc.testing.TestService/FullDuplexCall"},
		{":authority", "x"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	req, err := proto.Marshal(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte(body)}})
	if err != nil {
		t.Fatal(err)
	}
	return fr, nc, hb.Bytes(), append([]byte{0, 0, 0, 0, byte(len(req))}, req...)
}

// readUntilPing reads frames until the ack of PING 7 and lists them.
func readUntilPing(t *testing.T, fr *http2.Framer) []string {
	t.Helper()
	return readUntil(t, fr, "")
}

// readUntil reads frames until the ack of PING 7 (listed as "ping") and,
// if last is not "", one listed as last.
func readUntil(t *testing.T, fr *http2.Framer, last string) []string {
	t.Helper()
	pinged := false
	var got []string
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no PING answer (%v); frames: %s", err, strings.Join(got, " "))
		}
		switch f := f.(type) {
		case *http2.PingFrame:
			if f.IsAck() && f.Data == [8]byte{7} {
				pinged = true
				if last == "" {
					return got
				}
				got = append(got, "ping")
			}
		default:
			if l, ok := frameLabel(fr, f); ok {
				got = append(got, l)
			}
		}
		if pinged && len(got) > 0 && got[len(got)-1] == last {
			return got
		}
	}
}

// frameLabel lists a stream's DATA, HEADERS and RST_STREAM frames as
// "data:ID", "headers:ID:end=B" and "rst:ID"; it acks the server's
// SETTINGS and leaves other frames out.
func frameLabel(fr *http2.Framer, f http2.Frame) (string, bool) {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if !f.IsAck() {
			fr.WriteSettingsAck()
		}
	case *http2.DataFrame:
		return fmt.Sprintf("data:%d", f.StreamID), true
	case *http2.MetaHeadersFrame:
		return fmt.Sprintf("headers:%d:end=%v", f.StreamID, f.StreamEnded()), true
	case *http2.RSTStreamFrame:
		return fmt.Sprintf("rst:%d", f.StreamID), true
	}
	return "", false
}

// TestInlineStreamNeverBlocksReader: replies that do not fit a client's
// 64 KiB connection window are sent by a goroutine that waits for room,
// and the reader meanwhile answers a PING.
func TestInlineStreamNeverBlocksReader(t *testing.T) {
	e := &echoInline{}
	fr, _, hdr, msg := rawInline(t, e, "big")
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr, EndHeaders: true})
	for range 6 { // 180 KiB of replies
		fr.WriteData(1, false, msg)
	}
	fr.WritePing(false, [8]byte{7})
	got := readUntilPing(t, fr)
	if n := strings.Count(strings.Join(got, " "), "data:1"); n < 1 || n >= 12 {
		t.Fatalf("before the PING answer: %s", got)
	}
}

// TestInlineStreamEndThenReset: a client that ends its side and resets
// the stream in one write (clientv3's KeepAliveOnce) is sent no trailers;
// one that only ends its side gets them.
func TestInlineStreamEndThenReset(t *testing.T) {
	e := &echoInline{}
	fr, nc, hdr, msg := rawInline(t, e, "x")
	var out bytes.Buffer
	w := http2.NewFramer(&out, nil)
	w.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr, EndHeaders: true})
	w.WriteData(1, false, msg)
	w.WriteData(1, true, nil)
	w.WriteRSTStream(1, http2.ErrCodeCancel)
	w.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: hdr, EndHeaders: true})
	w.WriteData(3, false, msg)
	w.WriteData(3, true, nil)
	w.WritePing(false, [8]byte{7})
	if _, err := nc.Write(out.Bytes()); err != nil {
		t.Fatal(err)
	}
	// Stream 3's trailers wait for the reader to have read the PING.
	got := strings.Join(readUntil(t, fr, "headers:3:end=true"), " ")
	if !strings.HasPrefix(got, "headers:1:end=false data:1 headers:3:end=false data:3") || strings.Contains(got, ":1:end=true") {
		t.Fatalf("frames %s; want stream 1 answered without trailers, stream 3 with", got)
	}
	if ended := e.endedList(); ended != "Canceled,OK" {
		t.Errorf("Ended: %s", ended)
	}
}

// TestInlineStreamGracefulStop: GracefulStop ends an open inline call with
// its handler's Stopped error instead of waiting for the client.
func TestInlineStreamGracefulStop(t *testing.T) {
	e := &echoInline{}
	s, c := inlineServerStop(t, e)
	st, err := c.FullDuplexCall(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sendBody(t, st, "x")
	if r := recvBody(st); r != "inline:x" {
		t.Fatal(r)
	}
	stopped := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(stopped)
	}()
	if r := recvBody(st); r != `Unavailable: "stopping"` {
		t.Fatalf("open call at GracefulStop: %s", r)
	}
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("GracefulStop waits for an open inline call")
	}
	if got := e.endedList(); got != "Unavailable" {
		t.Errorf("Ended: %s", got)
	}
}
