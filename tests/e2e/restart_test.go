package e2e

import (
	"context"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/status"

	"github.com/metastore-dev/metastore/tests/framework"
)

// TestRestartKeepsState: after SIGKILL (and after a graceful SIGTERM) the
// restarted server has the same revision, compacted revision, keys with
// their create/mod revisions and versions, deletions, and the same cluster
// and member ids.
func TestRestartKeepsState(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	var p *framework.Process
	if framework.OnlyEtcd() {
		p = framework.StartEtcdProcess(t, dataDir)
	} else {
		p = framework.StartMetastoreProcess(t, dataDir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	type snapshot struct {
		rev, clusterID, memberID int64
		all                      *pb.RangeResponse
		at5                      *pb.RangeResponse
	}
	take := func() snapshot {
		t.Helper()
		cli := framework.NewClient(t, p.Endpoint)
		defer cli.Close()
		kv := pb.NewKVClient(cli.ActiveConnection())
		all, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
		if err != nil {
			t.Fatalf("range: %v", err)
		}
		at5, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: 5})
		if err != nil {
			t.Fatalf("range at 5: %v", err)
		}
		_, err = kv.Range(ctx, &pb.RangeRequest{Key: []byte("a"), Revision: 4})
		if s, w := status.Convert(err), status.Convert(rpctypes.ErrGRPCCompacted); s.Code() != w.Code() || s.Message() != w.Message() {
			t.Errorf("range below the compacted revision: %v, want %v", err, rpctypes.ErrGRPCCompacted)
		}
		_, err = kv.Compact(ctx, &pb.CompactionRequest{Revision: 5})
		if s, w := status.Convert(err), status.Convert(rpctypes.ErrGRPCCompacted); s.Code() != w.Code() || s.Message() != w.Message() {
			t.Errorf("compact at the compacted revision: %v, want %v", err, rpctypes.ErrGRPCCompacted)
		}
		m, err := pb.NewClusterClient(cli.ActiveConnection()).MemberList(ctx, &pb.MemberListRequest{})
		if err != nil {
			t.Fatalf("member list: %v", err)
		}
		return snapshot{rev: all.Header.Revision, clusterID: int64(m.Header.ClusterId), memberID: int64(m.Header.MemberId), all: all, at5: at5}
	}

	cli := framework.NewClient(t, p.Endpoint)
	kv := pb.NewKVClient(cli.ActiveConnection())
	for _, r := range []any{
		&pb.PutRequest{Key: []byte("a"), Value: []byte("1")}, // 2
		&pb.PutRequest{Key: []byte("a"), Value: []byte("2")}, // 3
		&pb.PutRequest{Key: []byte("b"), Value: []byte("1")}, // 4
		&pb.DeleteRangeRequest{Key: []byte("a")},             // 5
		&pb.PutRequest{Key: []byte("c"), Value: []byte("1")}, // 6
		&pb.CompactionRequest{Revision: 5, Physical: true},   // no revision
		&pb.PutRequest{Key: []byte("b"), Value: []byte("2")}, // 7
		&pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("d"), Value: []byte("1")}}}}}, // 8
	} {
		var err error
		switch r := r.(type) {
		case *pb.PutRequest:
			_, err = kv.Put(ctx, r)
		case *pb.DeleteRangeRequest:
			_, err = kv.DeleteRange(ctx, r)
		case *pb.CompactionRequest:
			_, err = kv.Compact(ctx, r)
		case *pb.TxnRequest:
			_, err = kv.Txn(ctx, r)
		}
		if err != nil {
			t.Fatalf("%v: %v", r, err)
		}
	}
	cli.Close()
	before := take()
	if before.rev != 8 {
		t.Fatalf("revision %d before restart, want 8", before.rev)
	}
	check := func(how string) {
		t.Helper()
		after := take()
		if after.rev != before.rev {
			t.Errorf("after %s: revision %d, want %d", how, after.rev, before.rev)
		}
		if after.clusterID != before.clusterID || after.memberID != before.memberID {
			t.Errorf("after %s: cluster/member id %x/%x, want %x/%x", how, after.clusterID, after.memberID, before.clusterID, before.memberID)
		}
		for _, c := range []struct {
			what string
			a, b *pb.RangeResponse
		}{{"current", before.all, after.all}, {"at revision 5", before.at5, after.at5}} {
			c.a.Header, c.b.Header = nil, nil
			if c.a.String() != c.b.String() {
				t.Errorf("after %s: %s state differs:\nbefore %v\nafter  %v", how, c.what, c.a, c.b)
			}
		}
	}
	p.Kill()
	p.Restart()
	check("SIGKILL")
	start := time.Now()
	if err := p.Stop(); err != nil {
		t.Errorf("SIGTERM: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("graceful stop took %v", d.Round(time.Millisecond))
	}
	p.Restart()
	check("SIGTERM")
}
