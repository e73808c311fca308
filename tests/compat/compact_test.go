package compat

import (
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/metastore-dev/metastore/tests/framework"
)

func TestCompact(t *testing.T) {
	scenario(t, framework.Options{}, func(e *env) {
		e.mustPut("a", "1")                                    // 2
		e.mustPut("a", "2")                                    // 3
		e.mustPut("b", "1")                                    // 4
		e.mustDelete(&pb.DeleteRangeRequest{Key: []byte("a")}) // 5
		e.mustPut("c", "1")                                    // 6
		e.mustPut("c", "2")                                    // 7

		e.run("future", func(e *env) {
			_, err := e.Compact(&pb.CompactionRequest{Revision: 8})
			e.wantErr(err, rpctypes.ErrGRPCFutureRev)
			_, err = e.Compact(&pb.CompactionRequest{Revision: 1 << 40, Physical: true})
			e.wantErr(err, rpctypes.ErrGRPCFutureRev)
			// nothing was compacted
			e.wantKVs(e.mustRange(&pb.RangeRequest{Key: []byte("a"), Revision: 2}).Kvs, kv("a", "1", 2, 2, 1))
		})
		e.run("logical", func(e *env) {
			r := e.mustCompact(&pb.CompactionRequest{Revision: 3})
			e.wantRev(r.Header, 7)
			_, err := e.Range(&pb.RangeRequest{Key: []byte("a"), Revision: 2})
			e.wantErr(err, rpctypes.ErrGRPCCompacted)
			e.wantKVs(e.mustRange(&pb.RangeRequest{Key: []byte("a"), Revision: 3}).Kvs, kv("a", "2", 2, 3, 2))
			e.wantKVs(e.mustRange(&pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"), Revision: 4}).Kvs, kv("a", "2", 2, 3, 2), kv("b", "1", 4, 4, 1))
		})
		e.run("already-compacted", func(e *env) {
			for _, rev := range []int64{3, 2, 1, 0} {
				_, err := e.Compact(&pb.CompactionRequest{Revision: rev})
				e.wantErr(err, rpctypes.ErrGRPCCompacted)
			}
			_, err := e.Compact(&pb.CompactionRequest{Revision: 3, Physical: true})
			e.wantErr(err, rpctypes.ErrGRPCCompacted)
		})
		e.run("physical", func(e *env) {
			r := e.mustCompact(&pb.CompactionRequest{Revision: 5, Physical: true})
			e.wantRev(r.Header, 7)
			_, err := e.Range(&pb.RangeRequest{Key: []byte("a"), Revision: 4})
			e.wantErr(err, rpctypes.ErrGRPCCompacted)
			at5 := e.mustRange(&pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"), Revision: 5})
			e.wantKVs(at5.Kvs, kv("b", "1", 4, 4, 1))
			e.wantEqual("count", at5.Count, int64(1))
			e.wantKVs(e.mustRange(&pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"), Revision: 6}).Kvs, kv("b", "1", 4, 4, 1), kv("c", "1", 6, 6, 1))
		})
		e.run("in-txn", func(e *env) {
			_, err := e.Txn(&pb.TxnRequest{Success: []*pb.RequestOp{opRange(&pb.RangeRequest{Key: []byte("a"), Revision: 4})}})
			e.wantErr(err, rpctypes.ErrGRPCCompacted)
			_, err = e.Txn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("x", "1"), opRange(&pb.RangeRequest{Key: []byte("a"), Revision: 1})}})
			e.wantErr(err, rpctypes.ErrGRPCCompacted)
			r := e.mustTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opRange(&pb.RangeRequest{Key: []byte("b"), Revision: 5})}})
			e.wantKVs(r.Responses[0].GetResponseRange().Kvs, kv("b", "1", 4, 4, 1))
			e.wantKVs(e.get("x").Kvs)
		})
		e.run("at-current", func(e *env) {
			r := e.mustCompact(&pb.CompactionRequest{Revision: 7, Physical: true})
			e.wantRev(r.Header, 7)
			all := e.mustRange(&pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"), Revision: 7})
			// create revision and version survive compaction
			e.wantKVs(all.Kvs, kv("b", "1", 4, 4, 1), kv("c", "2", 6, 7, 2))
			_, err := e.Range(&pb.RangeRequest{Key: []byte("c"), Revision: 6})
			e.wantErr(err, rpctypes.ErrGRPCCompacted)
			// compaction does not create a revision
			p := e.mustPut("c", "3")
			e.wantRev(p.Header, 8)
			e.wantKVs(e.get("c").Kvs, kv("c", "3", 6, 8, 3))
			p = e.mustPut("a", "again")
			e.wantKVs(e.get("a").Kvs, kv("a", "again", 9, 9, 1))
			d := e.mustDelete(&pb.DeleteRangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"), PrevKv: true})
			e.wantRev(d.Header, 10)
			e.wantKVs(d.PrevKvs, kv("a", "again", 9, 9, 1), kv("b", "1", 4, 4, 1), kv("c", "3", 6, 8, 3))
		})
		e.run("after-delete-all", func(e *env) {
			e.mustCompact(&pb.CompactionRequest{Revision: 10, Physical: true})
			r := e.mustRange(&pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"), Revision: 10})
			e.wantKVs(r.Kvs)
			e.wantEqual("count", r.Count, int64(0))
			p := e.mustPut("b", "new")
			e.wantRev(p.Header, 11)
			e.wantKVs(e.get("b").Kvs, kv("b", "new", 11, 11, 1))
		})
	})
}
