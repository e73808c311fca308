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

// TestConcurrentCAS: concurrent compare-and-swap increments of one counter
// (compare mod_revision, then put) must never both succeed from the same
// state, even when the server commits them in one batch: the final value
// equals the number of successful txns, their revisions are distinct, and
// the key's version counts every write.
func TestConcurrentCAS(t *testing.T) {
	t.Parallel()
	const workers, increments = 8, 25
	for _, b := range framework.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			srv := b.Start(t, framework.Options{})
			var (
				mu   sync.Mutex
				revs = map[int64]bool{}
				wg   sync.WaitGroup
			)
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					kv := pb.NewKVClient(srv.Client(t).ActiveConnection())
					for done := 0; done < increments; {
						r, err := kv.Range(t.Context(), &pb.RangeRequest{Key: []byte("counter")})
						if err != nil {
							t.Errorf("get: %v", err)
							return
						}
						n, mod := 0, int64(0)
						if len(r.Kvs) == 1 {
							fmt.Sscan(string(r.Kvs[0].Value), &n)
							mod = r.Kvs[0].ModRevision
						}
						tr, err := kv.Txn(t.Context(), &pb.TxnRequest{
							Compare: []*pb.Compare{cmpMod("counter", pb.Compare_EQUAL, mod)},
							Success: []*pb.RequestOp{opPut("counter", fmt.Sprint(n+1))},
						})
						if err != nil {
							t.Errorf("txn: %v", err)
							return
						}
						if tr.Succeeded {
							done++
							mu.Lock()
							if revs[tr.Header.Revision] {
								t.Errorf("two successful txns at revision %d", tr.Header.Revision)
							}
							revs[tr.Header.Revision] = true
							mu.Unlock()
						}
					}
				}()
			}
			wg.Wait()
			kv := pb.NewKVClient(srv.Client(t).ActiveConnection())
			r, err := kv.Range(t.Context(), &pb.RangeRequest{Key: []byte("counter")})
			if err != nil {
				t.Fatal(err)
			}
			want := workers * increments
			if len(r.Kvs) != 1 || string(r.Kvs[0].Value) != fmt.Sprint(want) || r.Kvs[0].Version != int64(want) {
				t.Errorf("counter = %v, want value and version %d", r.Kvs, want)
			}
			if r.Header.Revision != int64(1+want) {
				t.Errorf("revision %d, want %d (one per successful txn; failed compares change nothing)", r.Header.Revision, 1+want)
			}
		})
	}
}
