package v3rpc

import (
	"bytes"
	"math/rand/v2"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// naiveFragments splits as etcd's sendFragments does, re-measuring the
// whole message after each event: the reference for sendFragments, which
// keeps a running size instead.
func naiveFragments(wr *pb.WatchResponse, max int) []*pb.WatchResponse {
	if wr.Size() < max || len(wr.Events) < 2 {
		return []*pb.WatchResponse{wr}
	}
	var out []*pb.WatchResponse
	rest := wr.Events
	for len(rest) > 0 {
		cur := *wr
		cur.Fragment = true
		cur.Events = nil
		n := 0
		for n < len(rest) {
			cur.Events = rest[:n+1]
			if n+1 > 1 && cur.Size() >= max {
				cur.Events = rest[:n]
				break
			}
			n++
		}
		rest = rest[n:]
		cur.Fragment = len(rest) > 0
		out = append(out, &cur)
	}
	return out
}

func TestSendFragmentsMatchesEtcd(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 300 {
		var evs []*mvccpb.Event
		for j := range 1 + rng.IntN(40) {
			ev := &mvccpb.Event{Kv: &mvccpb.KeyValue{
				Key: []byte{byte(j)}, Value: bytes.Repeat([]byte("v"), rng.IntN(3000)),
				CreateRevision: 2, ModRevision: int64(2 + j), Version: int64(1 + rng.IntN(300)),
			}}
			if rng.IntN(3) == 0 {
				ev.Type = mvccpb.DELETE
				ev.PrevKv = &mvccpb.KeyValue{Key: ev.Kv.Key, Value: bytes.Repeat([]byte("p"), rng.IntN(2000)), ModRevision: 1}
			}
			evs = append(evs, ev)
		}
		wr := &pb.WatchResponse{Header: &pb.ResponseHeader{ClusterId: 7, MemberId: 9, Revision: 1000, RaftTerm: 2}, WatchId: int64(rng.IntN(5)), Events: evs}
		max := 200 + rng.IntN(20000)
		want := naiveFragments(wr, max)
		var got []*pb.WatchResponse
		if err := sendFragments(wr, max, func(r *pb.WatchResponse) error {
			c := *r
			got = append(got, &c)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("max %d: %d fragments, want %d", max, len(got), len(want))
		}
		for i := range got {
			if len(got[i].Events) != len(want[i].Events) || got[i].Fragment != want[i].Fragment || got[i].WatchId != wr.WatchId {
				t.Fatalf("max %d: fragment %d has %d events (fragment=%v), want %d (fragment=%v)",
					max, i, len(got[i].Events), got[i].Fragment, len(want[i].Events), want[i].Fragment)
			}
		}
	}
}
