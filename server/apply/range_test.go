package apply

import (
	"context"
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// TestRangePiece: a piece reads limit+1 keys and counts only those, in key
// order whether or not the request says "ascending keys"; a value-sorted
// piece sorts what it read (etcd's quirk); Range counts the whole range.
func TestRangePiece(t *testing.T) {
	s, l := newLoop(t, LoopOptions{})
	ctx := context.Background()
	for i := range 50 {
		if _, err := l.Propose(ctx, &Request{Put: &pb.PutRequest{Key: []byte(fmt.Sprintf("k%02d", i)), Value: []byte{byte(100 - i)}}}); err != nil {
			t.Fatal(err)
		}
	}
	tx, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.End()
	for _, c := range []struct {
		r                  pb.RangeRequest
		piece              bool
		first, last        string
		kvs, count         int
		more, keysHaveVals bool
	}{
		{pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), Limit: 10}, true, "k00", "k09", 10, 11, true, true},
		{pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), Limit: 10, SortOrder: pb.RangeRequest_ASCEND}, true, "k00", "k09", 10, 11, true, true},
		{pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), Limit: 10, SortOrder: pb.RangeRequest_ASCEND}, false, "k00", "k09", 10, 50, true, true},
		{pb.RangeRequest{Key: []byte("k45"), RangeEnd: []byte("l"), Limit: 10}, true, "k45", "k49", 5, 5, false, true},
		{pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), Limit: 10, KeysOnly: true}, true, "k00", "k09", 10, 11, true, false},
		// Values fall as keys rise: the 11 keys read, sorted by value, are
		// k10, k09, …, k01.
		{pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), Limit: 10, SortTarget: pb.RangeRequest_VALUE}, true, "k10", "k01", 10, 11, true, true},
		{pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), Limit: 10, SortTarget: pb.RangeRequest_VALUE, KeysOnly: true}, true, "k10", "k01", 10, 11, true, false},
	} {
		read := Range
		if c.piece {
			read = RangePiece
		}
		resp, err := read(ctx, tx, &c.r)
		if err != nil {
			t.Fatal(err)
		}
		got := resp.Kvs
		if len(got) != c.kvs || string(got[0].Key) != c.first || string(got[len(got)-1].Key) != c.last ||
			resp.Count != int64(c.count) || resp.More != c.more || (len(got[0].Value) > 0) != c.keysHaveVals {
			t.Errorf("%+v piece=%v: %d kvs %q..%q count %d more %v value %q", c.r, c.piece, len(got), got[0].Key, got[len(got)-1].Key, resp.Count, resp.More, got[0].Value)
		}
	}
}
