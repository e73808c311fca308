package compat

import (
	"fmt"
	"sync"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/tests/framework"
)

// TestRangeSortTies: sorting by a target on which many keys tie (keys
// created in one txn share create and mod revisions; fresh keys share
// version 1). The API leaves the order of ties unspecified, but clients see
// etcd's, so it must match: etcd uses sort.Sort (not stable) on the keys in
// key order.
func TestRangeSortTies(t *testing.T) {
	scenario(t, framework.Options{}, func(e *env) {
		var ops []*pb.RequestOp
		for i := 0; i < 30; i++ {
			ops = append(ops, opPut(fmt.Sprintf("t/%02d", (i*7)%30), fmt.Sprintf("v%d", i%4)))
		}
		e.mustTxn(&pb.TxnRequest{Success: ops[:15]}) // rev 2
		e.mustTxn(&pb.TxnRequest{Success: ops[15:]}) // rev 3
		for i := 0; i < 30; i += 4 {
			e.mustPut(fmt.Sprintf("t/%02d", i), "again")
		}
		for _, target := range []pb.RangeRequest_SortTarget{pb.RangeRequest_VERSION, pb.RangeRequest_CREATE, pb.RangeRequest_MOD, pb.RangeRequest_VALUE} {
			for _, order := range []pb.RangeRequest_SortOrder{pb.RangeRequest_NONE, pb.RangeRequest_ASCEND, pb.RangeRequest_DESCEND} {
				for _, limit := range []int64{0, 5, 29} {
					r := e.mustRange(&pb.RangeRequest{Key: []byte("t/"), RangeEnd: []byte(prefixEnd("t/")), SortTarget: target, SortOrder: order, Limit: limit, KeysOnly: true})
					if limit == 0 && len(r.Kvs) != 30 {
						e.t.Errorf("%v %v: %d keys, want 30", target, order, len(r.Kvs))
					}
				}
			}
		}
	})
}

// TestReadYourWrites: concurrent clients each write and immediately read
// back, linearizable and serializable; on one member both must see the
// acknowledged write.
func TestReadYourWrites(t *testing.T) {
	t.Parallel()
	for _, b := range framework.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			srv := b.Start(t, framework.Options{})
			var wg sync.WaitGroup
			for w := 0; w < 4; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					cli := srv.Client(t)
					kv := pb.NewKVClient(cli.ActiveConnection())
					for i := 0; i < 50; i++ {
						key := []byte(fmt.Sprintf("ryw/%d", w))
						val := []byte(fmt.Sprint(i))
						p, err := kv.Put(t.Context(), &pb.PutRequest{Key: key, Value: val})
						if err != nil {
							t.Errorf("put: %v", err)
							return
						}
						for _, ser := range []bool{false, true} {
							r, err := kv.Range(t.Context(), &pb.RangeRequest{Key: key, Serializable: ser})
							if err != nil {
								t.Errorf("get: %v", err)
								return
							}
							if r.Header.Revision < p.Header.Revision || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != string(val) || r.Kvs[0].ModRevision < p.Header.Revision {
								t.Errorf("serializable=%v: read after write at revision %d returned header %d, kvs %v", ser, p.Header.Revision, r.Header.Revision, r.Kvs)
								return
							}
						}
					}
				}(w)
			}
			wg.Wait()
		})
	}
}
