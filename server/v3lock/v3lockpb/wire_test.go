package v3lockpb

import (
	"bytes"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/runtime/protoimpl"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type message interface {
	Size() int
	Marshal() ([]byte, error)
	MarshalToSizedBuffer([]byte) (int, error)
	Unmarshal([]byte) error
}

// TestRoundTrip: Size, Marshal and MarshalToSizedBuffer agree and decoding
// gives the message back. (tests/compat compares the bytes with etcd's
// generated code.)
func TestRoundTrip(t *testing.T) {
	hdr := &pb.ResponseHeader{ClusterId: 1, MemberId: 2, Revision: 3, RaftTerm: 4}
	kv := &mvccpb.KeyValue{Key: []byte("k"), Value: []byte("v"), CreateRevision: 5, ModRevision: 6, Version: 1, Lease: -1}
	lk := &LeaderKey{Name: []byte("e"), Key: []byte("e/1"), Rev: 9, Lease: 1}
	for _, c := range []struct{ in, out message }{
		{&LockRequest{Name: []byte("n"), Lease: -7}, new(LockRequest)},
		{&LockResponse{Header: hdr, Key: []byte("n/1")}, new(LockResponse)},
		{&LockResponse{Header: &pb.ResponseHeader{}}, new(LockResponse)},
		{&UnlockRequest{Key: []byte("n/1")}, new(UnlockRequest)},
		{&UnlockResponse{Header: hdr}, new(UnlockResponse)},
		{&CampaignRequest{Name: []byte("e"), Lease: 1, Value: []byte("v")}, new(CampaignRequest)},
		{&CampaignResponse{Header: hdr, Leader: lk}, new(CampaignResponse)},
		{lk, new(LeaderKey)},
		{&LeaderRequest{Name: []byte("e")}, new(LeaderRequest)},
		{&LeaderResponse{Header: hdr, Kv: kv}, new(LeaderResponse)},
		{&ResignRequest{Leader: lk}, new(ResignRequest)},
		{&ResignResponse{Header: hdr}, new(ResignResponse)},
		{&ProclaimRequest{Leader: lk, Value: []byte("w")}, new(ProclaimRequest)},
		{&ProclaimResponse{Header: hdr}, new(ProclaimResponse)},
	} {
		b, err := c.in.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != c.in.Size() {
			t.Errorf("%T: Marshal gives %d bytes, Size says %d", c.in, len(b), c.in.Size())
		}
		sized := make([]byte, c.in.Size())
		if _, err := c.in.MarshalToSizedBuffer(sized); err != nil || !bytes.Equal(sized, b) {
			t.Errorf("%T: MarshalToSizedBuffer = %x, %v; Marshal %x", c.in, sized, err, b)
		}
		if err := c.out.Unmarshal(b); err != nil {
			t.Fatalf("%T: %v", c.in, err)
		}
		again, _ := c.out.Marshal()
		if !bytes.Equal(again, b) {
			t.Errorf("%T: round trip %x, want %x", c.in, again, b)
		}
	}
	if err := new(LockRequest).Unmarshal([]byte{0x0a, 0x05, 'x'}); err == nil {
		t.Error("a truncated field decoded")
	}
	if err := new(LockRequest).Unmarshal([]byte{0x10, 0x01, 0x0a, 0x01, 'x', 0x18, 0x02}); err != nil {
		t.Errorf("an unknown field was not skipped: %v", err)
	}
}

// TestJSON: the gateway's JSON uses the proto field names and etcd's
// encodings (bytes in base64, 64-bit integers as strings).
func TestJSON(t *testing.T) {
	m := &CampaignResponse{Header: &pb.ResponseHeader{Revision: 3}, Leader: &LeaderKey{Name: []byte("e"), Key: []byte("e/1"), Rev: 9, Lease: 1}}
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(protoimpl.X.ProtoMessageV2Of(m))
	if err != nil {
		t.Fatal(err)
	}
	var compact bytes.Buffer
	compact.Write(bytes.ReplaceAll(b, []byte(" "), nil))
	want := `{"header":{"revision":"3"},"leader":{"name":"ZQ==","key":"ZS8x","rev":"9","lease":"1"}}`
	if compact.String() != want {
		t.Errorf("JSON = %s, want %s", compact.String(), want)
	}
	var back CampaignRequest
	if err := protojson.Unmarshal([]byte(`{"name":"ZQ==","lease":"5","value":"dg=="}`), protoimpl.X.ProtoMessageV2Of(&back)); err != nil {
		t.Fatal(err)
	}
	if string(back.Name) != "e" || back.Lease != 5 || string(back.Value) != "v" {
		t.Errorf("decoded %+v", back)
	}
	if s := m.String(); s == "" {
		t.Error("String is empty")
	}
}
