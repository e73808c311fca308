package h2grpc

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// tryService's StreamingOutputCall sends its messages with TrySendMsg
// until one does not fit, reports how many did, and sends the rest with
// SendMsg.
type tryService struct {
	testpb.UnimplementedTestServiceServer
	fitted chan int
}

func (s *tryService) StreamingOutputCall(in *testpb.StreamingOutputCallRequest, out testpb.TestService_StreamingOutputCallServer) error {
	ts := out.(*grpc.GenericServerStream[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]).ServerStream.(interface {
		TrySendMsg(any) (bool, error)
		SendConn() any
	})
	if ts.SendConn() == nil {
		panic("no connection")
	}
	i := 0
	for ; i < len(in.ResponseParameters); i++ {
		m := &testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: bytes.Repeat([]byte{byte('a' + i%26)}, int(in.ResponseParameters[i].Size))}}
		sent, err := ts.TrySendMsg(m)
		if err != nil {
			return err
		}
		if !sent {
			break
		}
	}
	s.fitted <- i
	for ; i < len(in.ResponseParameters); i++ {
		m := &testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: bytes.Repeat([]byte{byte('a' + i%26)}, int(in.ResponseParameters[i].Size))}}
		if err := out.Send(m); err != nil {
			return err
		}
	}
	return nil
}

// TestTrySendMsg: TrySendMsg sends only what the stream's window takes
// whole, sends nothing of the message that does not fit, and SendMsg
// carries on from there in order once the client reads.
func TestTrySendMsg(t *testing.T) {
	svc := &tryService{fitted: make(chan int, 1)}
	s := NewServer(Options{Codec: protoCodec()})
	testpb.RegisterTestServiceServer(s, svc)
	// A fixed 64 KiB stream window (no BDP growth), which only reading
	// replenishes.
	_, c, _ := run(t, transport{"lean", s.Serve, s.Stop, s.GracefulStop},
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(16<<20))
	const n, size = 40, 10 << 10
	var params []*testpb.ResponseParameters
	for range n {
		params = append(params, &testpb.ResponseParameters{Size: size})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := c.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: params})
	if err != nil {
		t.Fatal(err)
	}
	var fitted int
	select {
	case fitted = <-svc.fitted:
	case <-ctx.Done():
		t.Fatal("TrySendMsg waited")
	}
	// Each message is its payload plus a few bytes of protobuf and the
	// 5-byte gRPC prefix.
	if fitted == 0 || fitted*size > 64<<10 || (fitted+1)*(size+16) < 64<<10 {
		t.Fatalf("%d messages of %d bytes fitted a 64 KiB window", fitted, size)
	}
	for i := 0; ; i++ {
		r, err := st.Recv()
		if err == io.EOF {
			if i != n {
				t.Fatalf("got %d messages, want %d", i, n)
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Payload.Body) != size || r.Payload.Body[0] != byte('a'+i%26) {
			t.Fatalf("message %d: %d bytes of %q", i, len(r.Payload.Body), r.Payload.Body[0])
		}
	}
}
