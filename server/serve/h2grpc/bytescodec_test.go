package h2grpc

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/protobuf/proto"
)

// bytesCodec is the proto codec with the BytesCodec methods, counting
// their uses.
type bytesCodec struct {
	encoding.CodecV2
	appends, unmarshals atomic.Int64
}

func (c *bytesCodec) AppendMarshal(b []byte, v any) ([]byte, error) {
	c.appends.Add(1)
	return proto.MarshalOptions{}.MarshalAppend(b, v.(proto.Message))
}

func (c *bytesCodec) UnmarshalBytes(data []byte, v any) error {
	c.unmarshals.Add(1)
	return proto.Unmarshal(data, v.(proto.Message))
}

// TestBytesCodec: with a BytesCodec, unary and streaming calls encode and
// decode through it, with the same results as grpc-go's server with the
// plain codec; a compressed response still goes through Marshal.
func TestBytesCodec(t *testing.T) {
	bc := &bytesCodec{CodecV2: protoCodec()}
	call := func(t *testing.T, _ *grpc.ClientConn, c testpb.TestServiceClient) string {
		ctx := context.Background()
		resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 5})
		if err != nil {
			t.Fatal(err)
		}
		out := fmt.Sprintf("unary %d;", len(resp.Payload.Body))
		st, err := c.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{
			ResponseParameters: []*testpb.ResponseParameters{{Size: 3}, {Size: 70000}}})
		if err != nil {
			t.Fatal(err)
		}
		for {
			m, err := st.Recv()
			if err != nil {
				out += " " + statusString(err)
				break
			}
			out += fmt.Sprintf(" %d", len(m.Payload.Body))
		}
		resp, err = c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 9}, grpc.UseCompressor("gzip"))
		if err != nil {
			t.Fatal(err)
		}
		return out + fmt.Sprintf("; gzip %d", len(resp.Payload.Body))
	}
	svc := &testService{blocked: make(chan context.Context, 1)}
	var got []string
	for i, mk := range newTransports(Options{Codec: protoCodec()}, svc) {
		tr := mk()
		if i == 1 {
			s := NewServer(Options{Codec: bc})
			testpb.RegisterTestServiceServer(s, svc)
			tr = transport{"lean", s.Serve, s.Stop, s.GracefulStop}
		}
		t.Run(tr.name, func(t *testing.T) {
			cc, c, _ := run(t, tr)
			got = append(got, call(t, cc, c))
		})
	}
	if len(got) != 2 || got[0] != got[1] {
		t.Fatalf("grpc-go and lean differ: %q", got)
	}
	// unary + stream + gzip requests decoded; the unary and the two
	// streamed replies appended (the gzip one is not).
	if u, a := bc.unmarshals.Load(), bc.appends.Load(); u != 3 || a != 3 {
		t.Errorf("BytesCodec used for %d decodes and %d encodes, want 3 and 3", u, a)
	}
}
