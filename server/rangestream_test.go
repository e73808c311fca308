package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"

	"github.com/metastore-dev/metastore/server/config"
	"github.com/metastore-dev/metastore/server/v3rpc"
)

type testServer struct {
	s    *Server
	conn *grpc.ClientConn
	kv   pb.KVClient
}

// startTestServer runs a Server on a loopback port until the test ends.
func startTestServer(t *testing.T, tune func(*config.Config), dialOpts ...grpc.DialOption) *testServer {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Server.ListenClientURLs = []string{"http://127.0.0.1:0"}
	if tune != nil {
		tune(cfg)
	}
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("server did not stop")
		}
	})
	conn, err := grpc.NewClient(s.ClientAddrs()[0], append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, dialOpts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &testServer{s: s, conn: conn, kv: pb.NewKVClient(conn)}
}

var rangeStreamDesc = &grpc.StreamDesc{StreamName: "RangeStream", ServerStreams: true}

// openRangeStream starts a RangeStream call.
func (ts *testServer) openRangeStream(ctx context.Context, r *pb.RangeRequest) (grpc.ClientStream, error) {
	cs, err := ts.conn.NewStream(ctx, rangeStreamDesc, "/etcdserverpb.KV/RangeStream", grpc.ForceCodecV2(v3rpc.Codec()))
	if err != nil {
		return nil, err
	}
	if err := cs.SendMsg(r); err != nil {
		return nil, err
	}
	return cs, cs.CloseSend()
}

// rangeStream returns every chunk of a RangeStream call.
func (ts *testServer) rangeStream(t *testing.T, r *pb.RangeRequest) ([]*pb.RangeResponse, error) {
	t.Helper()
	cs, err := ts.openRangeStream(context.Background(), r)
	if err != nil {
		return nil, err
	}
	var out []*pb.RangeResponse
	for {
		m := &v3rpc.RangeStreamResponse{}
		if err := cs.RecvMsg(m); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, err
		}
		out = append(out, m.RangeResponse)
	}
}

// mergeChunks checks that header, more and count are on the last chunk
// only and merges the chunks as a client's proto.Merge does.
func mergeChunks(t *testing.T, chunks []*pb.RangeResponse) *pb.RangeResponse {
	t.Helper()
	if len(chunks) == 0 {
		t.Fatal("no chunk")
	}
	merged := &pb.RangeResponse{}
	for i, c := range chunks {
		if i < len(chunks)-1 && (c.Header != nil || c.More || c.Count != 0) {
			t.Fatalf("chunk %d of %d has header/more/count: %v", i, len(chunks), c)
		}
		merged.Kvs = append(merged.Kvs, c.Kvs...)
	}
	last := chunks[len(chunks)-1]
	if last.Header == nil {
		t.Fatalf("last chunk has no header")
	}
	merged.Header, merged.More, merged.Count = last.Header, last.More, last.Count
	return merged
}

func chunkLens(chunks []*pb.RangeResponse) []int {
	var n []int
	for _, c := range chunks {
		n = append(n, len(c.Kvs))
	}
	return n
}

func (ts *testServer) put(t *testing.T, key, val string, lease int64) int64 {
	t.Helper()
	resp, err := ts.kv.Put(context.Background(), &pb.PutRequest{Key: []byte(key), Value: []byte(val), Lease: lease})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// putMany puts keys prefix+"%05d" for [0, n) with values of size bytes, 100
// per txn.
func (ts *testServer) putMany(t *testing.T, prefix string, n, size int) {
	t.Helper()
	val := bytes.Repeat([]byte("v"), size)
	for i := 0; i < n; i += 100 {
		txn := &pb.TxnRequest{}
		for j := i; j < min(i+100, n); j++ {
			txn.Success = append(txn.Success, &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(fmt.Sprintf("%s%05d", prefix, j)), Value: val}}})
		}
		if _, err := ts.kv.Txn(context.Background(), txn); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRangeStreamMatchesRange: for every option RangeStream supports, the
// merged chunks equal Range's response, and header/more/count come on the
// last chunk only.
func TestRangeStreamMatchesRange(t *testing.T) {
	ts := startTestServer(t, nil)
	lc := pb.NewLeaseClient(ts.conn)
	lease, err := lc.LeaseGrant(context.Background(), &pb.LeaseGrantRequest{TTL: 600})
	if err != nil {
		t.Fatal(err)
	}
	var mid int64
	for i := range 60 {
		var l int64
		if i%7 == 0 {
			l = lease.ID
		}
		rev := ts.put(t, fmt.Sprintf("k%03d", i), strings.Repeat("v", i%13), l)
		if i == 30 {
			mid = rev
		}
	}
	ts.put(t, "k010", "again", 0)
	if _, err := ts.kv.DeleteRange(context.Background(), &pb.DeleteRangeRequest{Key: []byte("k020"), RangeEnd: []byte("k025")}); err != nil {
		t.Fatal(err)
	}
	ts.put(t, "z", "last", 0)
	reqs := []*pb.RangeRequest{
		{Key: []byte("k"), RangeEnd: []byte("l")},
		{Key: []byte("k"), RangeEnd: []byte("l"), Limit: 5},
		{Key: []byte("k"), RangeEnd: []byte("l"), Limit: 10},
		{Key: []byte("k"), RangeEnd: []byte("l"), Limit: 11},
		{Key: []byte("k"), RangeEnd: []byte("l"), Limit: 30},
		{Key: []byte("k"), RangeEnd: []byte("l"), Limit: 55},
		{Key: []byte("k"), RangeEnd: []byte("l"), Limit: 56},
		{Key: []byte("k"), RangeEnd: []byte("l"), Limit: 1000},
		{Key: []byte("k"), RangeEnd: []byte("l"), Limit: -1},
		{Key: []byte("k"), RangeEnd: []byte("l"), KeysOnly: true},
		{Key: []byte("k"), RangeEnd: []byte("l"), KeysOnly: true, Limit: 25},
		{Key: []byte("k"), RangeEnd: []byte("l"), CountOnly: true},
		{Key: []byte("k"), RangeEnd: []byte("l"), CountOnly: true, Limit: 3},
		{Key: []byte("k"), RangeEnd: []byte("l"), Revision: mid},
		{Key: []byte("k"), RangeEnd: []byte("l"), Revision: mid, Limit: 12},
		{Key: []byte("k"), RangeEnd: []byte("l"), Serializable: true},
		{Key: []byte("k"), RangeEnd: []byte("l"), SortOrder: pb.RangeRequest_ASCEND},
		{Key: []byte("k"), RangeEnd: []byte("l"), SortOrder: pb.RangeRequest_ASCEND, SortTarget: pb.RangeRequest_KEY, Limit: 20},
		{Key: []byte("k015"), RangeEnd: []byte{0}},
		{Key: []byte{0}, RangeEnd: []byte{0}, Limit: 40},
		{Key: []byte("k010")},
		{Key: []byte("k010"), KeysOnly: true},
		{Key: []byte("k021")},
		{Key: []byte("k021"), RangeEnd: []byte("k025")},
		{Key: []byte("m"), RangeEnd: []byte("n")},
		{Key: []byte("n"), RangeEnd: []byte("m")},
	}
	for _, r := range reqs {
		t.Run(fmt.Sprintf("%+v", r), func(t *testing.T) {
			want, err := ts.kv.Range(context.Background(), r)
			if err != nil {
				t.Fatal(err)
			}
			chunks, err := ts.rangeStream(t, r)
			if err != nil {
				t.Fatal(err)
			}
			got := mergeChunks(t, chunks)
			if !proto.Equal(protoadapt.MessageV2Of(got), protoadapt.MessageV2Of(want)) {
				t.Fatalf("merged chunks (%v)\n%v\nwant\n%v", chunkLens(chunks), got, want)
			}
		})
	}
}

// TestRangeStreamChunks: etcd's chunking: 10 keys first, then the limit
// doubles while a chunk is under half of --max-request-bytes and halves
// while it is over twice that; a request limit caps the pieces.
func TestRangeStreamChunks(t *testing.T) {
	ts := startTestServer(t, func(c *config.Config) { c.Limits.MaxRequestBytes = 16 << 10 })
	for i := range 100 {
		ts.put(t, fmt.Sprintf("s%03d", i), "x", 0)
	}
	big := strings.Repeat("b", 3000)
	for i := range 60 {
		ts.put(t, fmt.Sprintf("t%03d", i), big, 0)
	}
	for _, c := range []struct {
		r    *pb.RangeRequest
		want []int
	}{
		{&pb.RangeRequest{Key: []byte("s"), RangeEnd: []byte("t")}, []int{10, 20, 40, 30}},
		{&pb.RangeRequest{Key: []byte("s"), RangeEnd: []byte("t"), Limit: 35}, []int{10, 20, 5}},
		{&pb.RangeRequest{Key: []byte("s"), RangeEnd: []byte("t"), Limit: 30}, []int{10, 20}},
		{&pb.RangeRequest{Key: []byte("s"), RangeEnd: []byte("t"), Limit: 7}, []int{7}},
		{&pb.RangeRequest{Key: []byte("s"), RangeEnd: []byte("t"), Limit: 100}, []int{10, 20, 40, 30}},
		{&pb.RangeRequest{Key: []byte("s"), RangeEnd: []byte("s010")}, []int{10}},
		{&pb.RangeRequest{Key: []byte("s"), RangeEnd: []byte("s011")}, []int{10, 1}},
		{&pb.RangeRequest{Key: []byte("x"), RangeEnd: []byte("y")}, []int{0}},
		// 10 values of 3 KB are 30 KB, within [8 KB, 32 KB]: the limit stays.
		{&pb.RangeRequest{Key: []byte("t"), RangeEnd: []byte("u")}, []int{10, 10, 10, 10, 10, 10}},
		// Keys only, they are small: it doubles.
		{&pb.RangeRequest{Key: []byte("t"), RangeEnd: []byte("u"), KeysOnly: true}, []int{10, 20, 30}},
	} {
		chunks, err := ts.rangeStream(t, c.r)
		if err != nil {
			t.Fatal(err)
		}
		if got := chunkLens(chunks); !slices.Equal(got, c.want) {
			t.Errorf("%v: chunks %v, want %v", c.r, got, c.want)
		}
	}
	// Chunks above twice the target: the limit halves.
	huge := strings.Repeat("h", 12<<10)
	for i := range 6 {
		ts.put(t, fmt.Sprintf("u%d", i), huge, 0)
	}
	chunks, err := ts.rangeStream(t, &pb.RangeRequest{Key: []byte("u"), RangeEnd: []byte("v"), Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if got := chunkLens(chunks); !slices.Equal(got, []int{6}) {
		t.Errorf("huge values: chunks %v, want [6]", got)
	}
	for i := 6; i < 40; i++ {
		ts.put(t, fmt.Sprintf("u%d", i), huge, 0)
	}
	chunks, err = ts.rangeStream(t, &pb.RangeRequest{Key: []byte("u"), RangeEnd: []byte("v")})
	if err != nil {
		t.Fatal(err)
	}
	want := []int{10, 5}
	for range 12 {
		want = append(want, 2)
	}
	want = append(want, 1)
	if got := chunkLens(chunks); !slices.Equal(got, want) {
		t.Errorf("huge values: chunks %v, want %v", got, want)
	}
}

// TestRangeStreamErrors: etcd's checks and errors, before any chunk.
func TestRangeStreamErrors(t *testing.T) {
	ts := startTestServer(t, nil)
	for i := range 5 {
		ts.put(t, fmt.Sprintf("k%d", i), "v", 0)
	}
	if _, err := ts.kv.Compact(context.Background(), &pb.CompactionRequest{Revision: 4, Physical: true}); err != nil {
		t.Fatal(err)
	}
	unimpl := func(msg string) error { return status.Error(codes.Unimplemented, msg) }
	for _, c := range []struct {
		r    *pb.RangeRequest
		want error
	}{
		{&pb.RangeRequest{}, rpctypes.ErrGRPCEmptyKey},
		{&pb.RangeRequest{Key: []byte("k"), SortOrder: 7}, rpctypes.ErrGRPCInvalidSortOption},
		{&pb.RangeRequest{Key: []byte("k"), SortTarget: 9}, rpctypes.ErrGRPCInvalidSortOption},
		{&pb.RangeRequest{Key: []byte("k"), SortOrder: pb.RangeRequest_DESCEND}, unimpl("RangeStream does not support custom sort orders")},
		{&pb.RangeRequest{Key: []byte("k"), SortOrder: pb.RangeRequest_ASCEND, SortTarget: pb.RangeRequest_MOD}, unimpl("RangeStream does not support custom sort orders")},
		{&pb.RangeRequest{Key: []byte("k"), MinModRevision: 1}, unimpl("RangeStream does not support revision filters")},
		{&pb.RangeRequest{Key: []byte("k"), MaxCreateRevision: 1, SortOrder: pb.RangeRequest_DESCEND}, unimpl("RangeStream does not support custom sort orders")},
		{&pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), Revision: 100}, rpctypes.ErrGRPCFutureRev},
		{&pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), Revision: 3}, rpctypes.ErrGRPCCompacted},
		{&pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), Revision: 3, CountOnly: true}, rpctypes.ErrGRPCCompacted},
	} {
		chunks, err := ts.rangeStream(t, c.r)
		if len(chunks) != 0 || status.Code(err) != status.Code(c.want) || status.Convert(err).Message() != status.Convert(c.want).Message() {
			t.Errorf("%v: %d chunks, %v; want %v", c.r, len(chunks), err, c.want)
		}
	}
}

// TestRangeStreamPinned: the chunks come from the view taken when the
// stream started, though writes and a physical compaction past its
// revision happen while the client is still reading (etcd 3.7 fails such a
// stream with ErrCompacted; metastore's view stays readable).
func TestRangeStreamPinned(t *testing.T) {
	// A fixed 64 KiB window keeps the server from sending ahead.
	ts := startTestServer(t, nil, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	ts.putMany(t, "p", 3000, 1000)
	r := &pb.RangeRequest{Key: []byte("p"), RangeEnd: []byte("q")}
	want, err := ts.kv.Range(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := ts.openRangeStream(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	first := &v3rpc.RangeStreamResponse{}
	if err := cs.RecvMsg(first); err != nil {
		t.Fatal(err)
	}
	chunks := []*pb.RangeResponse{first.RangeResponse}
	if _, err := ts.kv.DeleteRange(context.Background(), &pb.DeleteRangeRequest{Key: []byte("p"), RangeEnd: []byte("q")}); err != nil {
		t.Fatal(err)
	}
	rev := ts.put(t, "p00001", "new", 0)
	if _, err := ts.kv.Compact(context.Background(), &pb.CompactionRequest{Revision: rev, Physical: true}); err != nil {
		t.Fatal(err)
	}
	for {
		m := &v3rpc.RangeStreamResponse{}
		if err := cs.RecvMsg(m); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatal(err)
		}
		chunks = append(chunks, m.RangeResponse)
	}
	if len(chunks) < 3 {
		t.Fatalf("only %d chunks", len(chunks))
	}
	got := mergeChunks(t, chunks)
	if !proto.Equal(protoadapt.MessageV2Of(got), protoadapt.MessageV2Of(want)) {
		t.Fatalf("merged chunks differ from the Range before the stream: %d kvs, count %d, header %v", len(got.Kvs), got.Count, got.Header)
	}
}

// TestRangeStreamAuth: READ permission on the range, checked as Range's;
// a permission revoked while the stream runs stops it before its next
// chunk.
func TestRangeStreamAuth(t *testing.T) {
	// A fixed 64 KiB window keeps the server from sending ahead.
	ts := startTestServer(t, func(c *config.Config) { c.Auth.BcryptCost = 4 },
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	ts.putMany(t, "a", 3000, 1000)
	ac := pb.NewAuthClient(ts.conn)
	ctx := context.Background()
	for _, step := range []func() error{
		func() error {
			_, err := ac.UserAdd(ctx, &pb.AuthUserAddRequest{Name: "root", Password: "r"})
			return err
		},
		func() error {
			_, err := ac.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: "root", Role: "root"})
			return err
		},
		func() error { _, err := ac.UserAdd(ctx, &pb.AuthUserAddRequest{Name: "u", Password: "p"}); return err },
		func() error { _, err := ac.RoleAdd(ctx, &pb.AuthRoleAddRequest{Name: "ra"}); return err },
		func() error {
			_, err := ac.RoleGrantPermission(ctx, &pb.AuthRoleGrantPermissionRequest{Name: "ra", Perm: &authpb.Permission{Key: []byte("a"), RangeEnd: []byte("b")}})
			return err
		},
		func() error {
			_, err := ac.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: "u", Role: "ra"})
			return err
		},
		func() error { _, err := ac.AuthEnable(ctx, &pb.AuthEnableRequest{}); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	tok := func(user, pass string) context.Context {
		resp, err := ac.Authenticate(ctx, &pb.AuthenticateRequest{Name: user, Password: pass})
		if err != nil {
			t.Fatal(err)
		}
		return metadata.AppendToOutgoingContext(ctx, rpctypes.TokenFieldNameGRPC, resp.Token)
	}
	uctx, rctx := tok("u", "p"), tok("root", "r")
	recvAll := func(ctx context.Context, r *pb.RangeRequest) (int, error) {
		cs, err := ts.openRangeStream(ctx, r)
		if err != nil {
			return 0, err
		}
		n := 0
		for {
			m := &v3rpc.RangeStreamResponse{}
			if err := cs.RecvMsg(m); err != nil {
				if errors.Is(err, io.EOF) {
					return n, nil
				}
				return n, err
			}
			n += len(m.RangeResponse.Kvs)
		}
	}
	if n, err := recvAll(uctx, &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("b")}); err != nil || n != 3000 {
		t.Fatalf("permitted range: %d kvs, %v", n, err)
	}
	for _, r := range []*pb.RangeRequest{
		{Key: []byte("a"), RangeEnd: []byte("c")},
		{Key: []byte("b")},
		{Key: []byte("a"), RangeEnd: []byte{0}},
	} {
		if n, err := recvAll(uctx, r); !errors.Is(err, rpctypes.ErrGRPCPermissionDenied) || n != 0 {
			t.Fatalf("%v: %d kvs, %v; want permission denied", r, n, err)
		}
	}
	if _, err := recvAll(context.Background(), &pb.RangeRequest{Key: []byte("a")}); !errors.Is(err, rpctypes.ErrGRPCUserEmpty) {
		t.Fatalf("no token: %v", err)
	}

	// Revoked mid-stream: the client holds the stream after its first chunk.
	cs, err := ts.openRangeStream(uctx, &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("b")})
	if err != nil {
		t.Fatal(err)
	}
	m := &v3rpc.RangeStreamResponse{}
	if err := cs.RecvMsg(m); err != nil {
		t.Fatal(err)
	}
	if _, err := ac.RoleRevokePermission(rctx, &pb.AuthRoleRevokePermissionRequest{Role: "ra", Key: []byte("a"), RangeEnd: []byte("b")}); err != nil {
		t.Fatal(err)
	}
	n := len(m.RangeResponse.Kvs)
	for {
		m := &v3rpc.RangeStreamResponse{}
		if err = cs.RecvMsg(m); err != nil {
			break
		}
		n += len(m.RangeResponse.Kvs)
	}
	if !errors.Is(err, rpctypes.ErrGRPCPermissionDenied) || n >= 3000 {
		t.Fatalf("revoked mid-stream: %d kvs then %v", n, err)
	}
}

// TestRangeStreamMetrics: RangeStream is counted as the server stream it
// is, one sent message per chunk.
func TestRangeStreamMetrics(t *testing.T) {
	ts := startTestServer(t, nil)
	for i := range 25 {
		ts.put(t, fmt.Sprintf("m%02d", i), "v", 0)
	}
	chunks, err := ts.rangeStream(t, &pb.RangeRequest{Key: []byte("m"), RangeEnd: []byte("n")})
	if err != nil || len(chunks) != 2 {
		t.Fatalf("%d chunks, %v", len(chunks), err)
	}
	if _, err := ts.rangeStream(t, &pb.RangeRequest{}); err == nil {
		t.Fatal("empty key accepted")
	}
	mfs, err := ts.s.metrics.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			labels := map[string]string{}
			for _, l := range m.Label {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["grpc_method"] != "RangeStream" {
				continue
			}
			if labels["grpc_type"] != "server_stream" || labels["grpc_service"] != "etcdserverpb.KV" {
				t.Errorf("%s labels %v", mf.GetName(), labels)
			}
			name := mf.GetName()
			if c := labels["grpc_code"]; c != "" {
				name += "/" + c
			}
			if m.Counter != nil {
				got[name] = m.Counter.GetValue()
			}
		}
	}
	want := map[string]float64{
		"grpc_server_started_total":                 2,
		"grpc_server_handled_total/OK":              1,
		"grpc_server_handled_total/InvalidArgument": 1,
		"grpc_server_msg_received_total":            2,
		"grpc_server_msg_sent_total":                2,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
}
