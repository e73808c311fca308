package h2grpc

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/gzip"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// testService echoes, streams and blocks as the tests need.
type testService struct {
	testpb.UnimplementedTestServiceServer
	// blocked receives a call's context when it parks (fill_username).
	blocked chan context.Context
}

func (s *testService) UnaryCall(ctx context.Context, in *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	switch in.GetResponseStatus().GetCode() {
	case 0:
	case -1: // park until canceled
		s.blocked <- ctx
		<-ctx.Done()
		return nil, ctx.Err()
	case -2: // with details
		st, _ := status.New(codes.FailedPrecondition, "détails: 100% ✓").WithDetails(wrapperspb.String("why"))
		return nil, st.Err()
	default:
		return nil, status.Error(codes.Code(in.ResponseStatus.Code), in.ResponseStatus.Message)
	}
	if v := md.Get("echo-header"); len(v) > 0 {
		grpc.SetHeader(ctx, metadata.Pairs("echo-header", v[0]))
	}
	if v := md.Get("echo-bin"); len(v) > 0 {
		grpc.SetTrailer(ctx, metadata.Pairs("echo-bin", v[0]))
	}
	if in.FillUsername {
		p, _ := peer.FromContext(ctx)
		name := "no-tls"
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 {
			name = ti.State.VerifiedChains[0][0].Subject.CommonName
		}
		return &testpb.SimpleResponse{Username: name}, nil
	}
	if in.FillServerId {
		if d, ok := ctx.Deadline(); ok {
			return &testpb.SimpleResponse{ServerId: time.Until(d).Round(time.Second).String()}, nil
		}
	}
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: bytes.Repeat([]byte{'x'}, int(in.ResponseSize))}}, nil
}

func (s *testService) StreamingOutputCall(in *testpb.StreamingOutputCallRequest, out testpb.TestService_StreamingOutputCallServer) error {
	for i, p := range in.ResponseParameters {
		body := bytes.Repeat([]byte{byte('a' + i%26)}, int(p.Size))
		if err := out.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: body}}); err != nil {
			return err
		}
	}
	return nil
}

func (s *testService) FullDuplexCall(stream testpb.TestService_FullDuplexCallServer) error {
	for {
		in, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: in.Payload}); err != nil {
			return err
		}
	}
}

// transport is one of the two servers under test: grpc-go's or ours,
// with the same options.
type transport struct {
	name  string
	serve func(net.Listener) error
	stop  func()
	grace func()
}

func newTransports(o Options, svc *testService) []func() transport {
	lean := func() transport {
		s := NewServer(o)
		testpb.RegisterTestServiceServer(s, svc)
		return transport{"lean", s.Serve, s.Stop, s.GracefulStop}
	}
	grpcgo := func() transport {
		opts := []grpc.ServerOption{grpc.ForceServerCodecV2(o.Codec), grpc.KeepaliveEnforcementPolicy(o.Enforcement)}
		if o.MaxRecvMsgSize > 0 {
			opts = append(opts, grpc.MaxRecvMsgSize(o.MaxRecvMsgSize))
		}
		if o.MaxSendMsgSize > 0 {
			opts = append(opts, grpc.MaxSendMsgSize(o.MaxSendMsgSize))
		}
		if o.Creds != nil {
			opts = append(opts, grpc.Creds(o.Creds))
		}
		s := grpc.NewServer(opts...)
		testpb.RegisterTestServiceServer(s, svc)
		return transport{"grpc-go", s.Serve, s.Stop, s.GracefulStop}
	}
	return []func() transport{grpcgo, lean}
}

func protoCodec() encoding.CodecV2 { return encoding.GetCodecV2("proto") }

// run starts the transport on a local port and returns a client.
func run(t *testing.T, tr transport, dial ...grpc.DialOption) (*grpc.ClientConn, testpb.TestServiceClient, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- tr.serve(l) }()
	if len(dial) == 0 {
		dial = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	cc, err := grpc.NewClient(l.Addr().String(), dial...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		tr.stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return cc, testpb.NewTestServiceClient(cc), l.Addr().String()
}

// both runs f against grpc-go's server and ours; f returns what a client
// saw, which must be the same.
func both(t *testing.T, o Options, f func(t *testing.T, cc *grpc.ClientConn, c testpb.TestServiceClient) string) {
	t.Helper()
	if o.Codec == nil {
		o.Codec = protoCodec()
	}
	var got []string
	for _, mk := range newTransports(o, &testService{blocked: make(chan context.Context, 1)}) {
		tr := mk()
		t.Run(tr.name, func(t *testing.T) {
			cc, c, _ := run(t, tr)
			got = append(got, f(t, cc, c))
		})
	}
	if len(got) == 2 && got[0] != got[1] {
		t.Errorf("grpc-go: %s\nlean:    %s", got[0], got[1])
	}
}

func statusString(err error) string {
	s := status.Convert(err)
	return fmt.Sprintf("%v: %q", s.Code(), s.Message())
}

func TestUnaryMetadata(t *testing.T) {
	both(t, Options{}, func(t *testing.T, cc *grpc.ClientConn, c testpb.TestServiceClient) string {
		ctx := metadata.AppendToOutgoingContext(context.Background(), "echo-header", "v1", "echo-bin", "\x00\xffbin")
		var hdr, trl metadata.MD
		resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 3}, grpc.Header(&hdr), grpc.Trailer(&trl))
		if err != nil {
			t.Fatal(err)
		}
		out := fmt.Sprintf("%s %v %v %q", resp.Payload.Body, hdr.Get("echo-header"), hdr.Get("content-type"), trl.Get("echo-bin"))
		// Header blocks beyond one frame: HEADERS + CONTINUATION both ways.
		big := strings.Repeat("0123456789", 5000)
		ctx = metadata.AppendToOutgoingContext(context.Background(), "echo-header", big)
		if _, err := c.UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.Header(&hdr)); err != nil {
			t.Fatal(err)
		}
		if got := hdr.Get("echo-header"); len(got) != 1 || got[0] != big {
			t.Fatalf("a 50 kB header came back as %d values", len(got))
		}
		return out
	})
}

func TestErrors(t *testing.T) {
	both(t, Options{MaxRecvMsgSize: 1000, MaxSendMsgSize: 2000}, func(t *testing.T, cc *grpc.ClientConn, c testpb.TestServiceClient) string {
		var out []string
		for _, req := range []*testpb.SimpleRequest{
			{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: "etcdserver: key not found\n100%"}},
			{Payload: &testpb.Payload{Body: make([]byte, 5000)}}, // too large a request
			{ResponseSize: 5000}, // too large a response
		} {
			_, err := c.UnaryCall(context.Background(), req)
			out = append(out, statusString(err))
		}
		_, err := c.UnaryCall(context.Background(), &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: -2}})
		st := status.Convert(err)
		out = append(out, statusString(err), fmt.Sprint(st.Details()))
		var trl metadata.MD
		err = grpc.Invoke(context.Background(), "/grpc.testing.TestService/Nope", &testpb.Empty{}, &testpb.Empty{}, cc, grpc.Trailer(&trl))
		out = append(out, statusString(err))
		err = grpc.Invoke(context.Background(), "/no.Service/Nope", &testpb.Empty{}, &testpb.Empty{}, cc)
		out = append(out, statusString(err))
		return strings.Join(out, "\n")
	})
}

func keepaliveParams(age, grace time.Duration) keepalive.ServerParameters {
	return keepalive.ServerParameters{MaxConnectionAge: age, MaxConnectionAgeGrace: grace}
}

func TestStreamsLargerThanWindows(t *testing.T) {
	both(t, Options{MaxRecvMsgSize: 16 << 20}, func(t *testing.T, cc *grpc.ClientConn, c testpb.TestServiceClient) string {
		var params []*testpb.ResponseParameters
		want := 0
		for i := range 12 {
			n := (i + 1) << 20 // 1..12 MiB, 78 MiB in all
			params = append(params, &testpb.ResponseParameters{Size: int32(n)})
			want += n
		}
		s, err := c.StreamingOutputCall(context.Background(), &testpb.StreamingOutputCallRequest{ResponseParameters: params}, grpc.MaxCallRecvMsgSize(64<<20))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for i := 0; ; i++ {
			r, err := s.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Payload.Body[0] != byte('a'+i%26) {
				t.Fatalf("message %d out of order", i)
			}
			got += len(r.Payload.Body)
		}
		if got != want {
			t.Fatalf("got %d bytes, want %d", got, want)
		}
		// Bidi, with requests bigger than the stream window.
		d, err := c.FullDuplexCall(context.Background(), grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20))
		if err != nil {
			t.Fatal(err)
		}
		for i := range 20 {
			body := bytes.Repeat([]byte{byte(i)}, (i%5)*(1<<20)+7)
			if err := d.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: body}}); err != nil {
				t.Fatal(err)
			}
			r, err := d.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(r.Payload.Body, body) {
				t.Fatalf("echo %d differs", i)
			}
		}
		d.CloseSend()
		if _, err := d.Recv(); err != io.EOF {
			t.Fatalf("end of bidi stream: %v", err)
		}
		return fmt.Sprint(got)
	})
}

func TestCancelAndDeadline(t *testing.T) {
	svc := &testService{blocked: make(chan context.Context, 1)}
	for _, mk := range newTransports(Options{Codec: protoCodec()}, svc) {
		tr := mk()
		t.Run(tr.name, func(t *testing.T) {
			_, c, _ := run(t, tr)
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() {
				_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: -1}})
				errc <- err
			}()
			sctx := <-svc.blocked
			cancel()
			select {
			case <-sctx.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("RST_STREAM did not cancel the handler's context")
			}
			if err := <-errc; status.Code(err) != codes.Canceled {
				t.Fatalf("canceled call: %v", err)
			}
			ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			go func() {
				_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: -1}})
				errc <- err
			}()
			sctx = <-svc.blocked
			if _, ok := sctx.Deadline(); !ok {
				t.Fatal("grpc-timeout did not set a deadline")
			}
			<-sctx.Done()
			if err := <-errc; status.Code(err) != codes.DeadlineExceeded {
				t.Fatalf("call past deadline: %v", err)
			}
			ctx, cancel = context.WithTimeout(context.Background(), time.Hour)
			defer cancel()
			r, err := c.UnaryCall(ctx, &testpb.SimpleRequest{FillServerId: true})
			if err != nil || r.ServerId != "1h0m0s" {
				t.Fatalf("deadline seen by the handler: %v %v", r, err)
			}
		})
	}
}

func TestManyConcurrentStreams(t *testing.T) {
	s := NewServer(Options{Codec: protoCodec(), MaxConcurrentStreams: 8, Workers: 4})
	testpb.RegisterTestServiceServer(s, &testService{})
	_, c, _ := run(t, transport{"lean", s.Serve, s.Stop, s.GracefulStop})
	var wg sync.WaitGroup
	errc := make(chan error, 100)
	for g := range 100 {
		wg.Go(func() {
			for i := range 20 {
				n := int32(g*20 + i)
				r, err := c.UnaryCall(context.Background(), &testpb.SimpleRequest{ResponseSize: n})
				if err != nil || len(r.Payload.Body) != int(n) {
					errc <- fmt.Errorf("call %d: %v", n, err)
					return
				}
			}
			st, err := c.FullDuplexCall(context.Background())
			if err == nil {
				err = st.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte("hi")}})
			}
			if err == nil {
				_, err = st.Recv()
			}
			if err == nil {
				st.CloseSend()
				if _, err = st.Recv(); err == io.EOF {
					err = nil
				}
			}
			if err != nil {
				errc <- err
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}

func TestGracefulStop(t *testing.T) {
	svc := &testService{blocked: make(chan context.Context, 1)}
	s := NewServer(Options{Codec: protoCodec()})
	testpb.RegisterTestServiceServer(s, svc)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	cc, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := testpb.NewTestServiceClient(cc)
	// An in-flight server stream whose handler waits for the client.
	d, err := c.FullDuplexCall(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte("1")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Recv(); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() { s.GracefulStop(); close(stopped) }()
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	select {
	case <-stopped:
		t.Fatal("GracefulStop returned with a call in flight")
	case <-time.After(100 * time.Millisecond):
	}
	// The call in flight goes on after the GOAWAY.
	if err := d.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte("2")}}); err != nil {
		t.Fatal(err)
	}
	if r, err := d.Recv(); err != nil || string(r.Payload.Body) != "2" {
		t.Fatalf("after GOAWAY: %v %v", r, err)
	}
	d.CloseSend()
	if _, err := d.Recv(); err != io.EOF {
		t.Fatalf("end: %v", err)
	}
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("GracefulStop did not return once the call ended")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := c.UnaryCall(ctx, &testpb.SimpleRequest{}); err == nil {
		t.Fatal("a call after GracefulStop succeeded")
	}
}

// rawConn is a client that speaks HTTP/2 frames directly.
// rawLean serves the test service on s and returns a raw HTTP/2
// connection to it, with a deadline that ends a hung test.
func rawLean(t *testing.T, s *Server) (*http2.Framer, net.Conn) {
	testpb.RegisterTestServiceServer(s, &testService{})
	_, _, addr := run(t, transport{"lean", s.Serve, s.Stop, s.GracefulStop})
	fr, nc := rawConn(t, addr)
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	return fr, nc
}

func rawConn(t *testing.T, addr string) (*http2.Framer, net.Conn) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	io.WriteString(nc, http2.ClientPreface)
	fr := http2.NewFramer(nc, nc)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.WriteSettings()
	return fr, nc
}

func TestTooManyPings(t *testing.T) {
	s := NewServer(Options{Codec: protoCodec()})
	fr, _ := rawLean(t, s)
	for i := range 5 {
		fr.WritePing(false, [8]byte{byte(i)})
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no GOAWAY before %v", err)
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			if g.ErrCode != http2.ErrCodeEnhanceYourCalm || string(g.DebugData()) != "too_many_pings" {
				t.Fatalf("GOAWAY %v %q", g.ErrCode, g.DebugData())
			}
			break
		}
	}
	if _, err := fr.ReadFrame(); err == nil {
		t.Fatal("connection still open after too_many_pings")
	}
}

func TestKeepalivePingTimeout(t *testing.T) {
	s := NewServer(Options{Codec: protoCodec()})
	s.o.Keepalive.Time = 50 * time.Millisecond // below the public floor, for the test
	s.o.Keepalive.Timeout = 50 * time.Millisecond
	fr, _ := rawLean(t, s)
	sawPing := false
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			break // closed: the ping went unanswered
		}
		if p, ok := f.(*http2.PingFrame); ok && !p.IsAck() {
			sawPing = true
		}
	}
	if !sawPing {
		t.Fatal("the connection closed without a keepalive ping")
	}
}

func TestMaxConnectionAge(t *testing.T) {
	s := NewServer(Options{Codec: protoCodec(), Keepalive: keepaliveParams(100*time.Millisecond, 100*time.Millisecond)})
	fr, _ := rawLean(t, s)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no GOAWAY: %v", err)
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			if g.ErrCode != http2.ErrCodeNo {
				t.Fatalf("GOAWAY code %v", g.ErrCode)
			}
			return
		}
	}
}

func TestTLSClientCert(t *testing.T) {
	ca, caKey := newCert(t, "ca", nil, nil)
	srvCert, srvKey := newCert(t, "127.0.0.1", ca, caKey)
	cliCert, cliKey := newCert(t, "alice", ca, caKey)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	srvTLS := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{srvCert.Raw}, PrivateKey: srvKey}},
		ClientCAs:    pool, ClientAuth: tls.RequireAndVerifyClientCert,
	}
	cliTLS := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{cliCert.Raw}, PrivateKey: cliKey}},
		RootCAs:      pool, ServerName: "127.0.0.1",
	}
	for _, mk := range newTransports(Options{Codec: protoCodec(), Creds: credentials.NewTLS(srvTLS)}, &testService{}) {
		tr := mk()
		t.Run(tr.name, func(t *testing.T) {
			_, c, _ := run(t, tr, grpc.WithTransportCredentials(credentials.NewTLS(cliTLS)))
			r, err := c.UnaryCall(context.Background(), &testpb.SimpleRequest{FillUsername: true})
			if err != nil || r.Username != "alice" {
				t.Fatalf("client CN seen by the handler: %v %v", r, err)
			}
		})
	}
}

func newCert(t *testing.T, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	if ip := net.ParseIP(cn); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	}
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// rawCall sends one request with the given grpc-encoding and message
// flag over raw HTTP/2 frames and returns the grpc-status and
// grpc-message of the answer.
func rawCall(t *testing.T, addr, encoding string, flag byte) string {
	fr, nc := rawConn(t, addr)
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/grpc.testing.TestService/UnaryCall"},
		{":authority", "x"}, {"content-type", "application/grpc"}, {"te", "trailers"}, {"grpc-encoding", encoding}} {
		if f[1] != "" {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
	fr.WriteData(1, true, []byte{flag, 0, 0, 0, 2, 1, 2})
	var got []string
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			for _, hf := range f.Fields {
				if hf.Name == "grpc-status" || hf.Name == "grpc-message" {
					got = append(got, hf.Name+"="+hf.Value)
				}
			}
			if f.StreamEnded() {
				return strings.Join(got, " ")
			}
		}
	}
}

func TestCompressionErrors(t *testing.T) {
	var got []string
	for _, mk := range newTransports(Options{Codec: protoCodec()}, &testService{}) {
		tr := mk()
		t.Run(tr.name, func(t *testing.T) {
			_, _, addr := run(t, tr)
			got = append(got, rawCall(t, addr, "", 1)+" | "+rawCall(t, addr, "snappy", 0)+" | "+rawCall(t, addr, "identity", 1))
		})
	}
	if got[0] != got[1] {
		t.Fatalf("grpc-go: %s\nlean:    %s", got[0], got[1])
	}
	if !strings.Contains(got[1], "grpc-status=12 grpc-message=grpc: Decompressor is not installed") {
		t.Fatalf("unknown encoding answered %s", got[1])
	}
}

func TestGzipRoundTrip(t *testing.T) {
	both(t, Options{}, func(t *testing.T, cc *grpc.ClientConn, c testpb.TestServiceClient) string {
		var hdr metadata.MD
		r, err := c.UnaryCall(context.Background(), &testpb.SimpleRequest{ResponseSize: 10000, Payload: &testpb.Payload{Body: make([]byte, 5000)}},
			grpc.UseCompressor(gzip.Name), grpc.Header(&hdr))
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(len(r.Payload.Body), hdr.Get("grpc-encoding"))
	})
}
