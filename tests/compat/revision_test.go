package compat

import (
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/metastore-dev/metastore/tests/framework"
)

// TestRevisions: the store starts at revision 1; every changing request
// (or txn) adds exactly one, shared by all its ops; requests that change
// nothing leave it; header.revision is the current one even for reads at a
// past revision.
func TestRevisions(t *testing.T) {
	scenario(t, framework.Options{}, func(e *env) {
		r := e.get("a")
		e.wantRev(r.Header, 1)
		e.wantKVs(r.Kvs)
		e.wantEqual("count", r.Count, int64(0))

		e.wantRev(e.mustPut("a", "1").Header, 2)
		e.wantRev(e.mustPut("b", "1").Header, 3)

		// One txn, one revision for all its ops.
		tr := e.mustTxn(&pb.TxnRequest{Success: []*pb.RequestOp{
			opPut("a", "2"), opPut("c", "1"), opDelete("b", ""),
			opRange(rng("a", "d")),
		}})
		e.wantRev(tr.Header, 4)
		e.wantEqual("succeeded", tr.Succeeded, true)
		e.wantRev(tr.Responses[0].GetResponsePut().Header, 4)
		e.wantRev(tr.Responses[1].GetResponsePut().Header, 4)
		e.wantRev(tr.Responses[2].GetResponseDeleteRange().Header, 4)
		e.wantEqual("deleted", tr.Responses[2].GetResponseDeleteRange().Deleted, int64(1))
		// A range inside the txn sees the txn's own writes.
		in := tr.Responses[3].GetResponseRange()
		e.wantRev(in.Header, 4)
		e.wantKVs(in.Kvs, kv("a", "2", 2, 4, 2), kv("c", "1", 4, 4, 1))

		all := e.mustRange(rng("\x00", "\x00"))
		e.wantRev(all.Header, 4)
		e.wantKVs(all.Kvs, kv("a", "2", 2, 4, 2), kv("c", "1", 4, 4, 1))

		// Reads at past revisions: header.revision stays current.
		past := e.mustRange(&pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"), Revision: 2})
		e.wantRev(past.Header, 4)
		e.wantKVs(past.Kvs, kv("a", "1", 2, 2, 1))
		past = e.mustRange(&pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"), Revision: 3})
		e.wantRev(past.Header, 4)
		e.wantKVs(past.Kvs, kv("a", "1", 2, 2, 1), kv("b", "1", 3, 3, 1))
		past = e.mustRange(&pb.RangeRequest{Key: []byte("a"), Revision: 1})
		e.wantRev(past.Header, 4)
		e.wantKVs(past.Kvs)

		// Nothing changes: no new revision.
		d := e.mustDelete(&pb.DeleteRangeRequest{Key: []byte("nothing")})
		e.wantRev(d.Header, 4)
		e.wantEqual("deleted", d.Deleted, int64(0))
		d = e.mustDelete(&pb.DeleteRangeRequest{Key: []byte("x"), RangeEnd: []byte("y")})
		e.wantRev(d.Header, 4)
		tr = e.mustTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opRange(rng("a", ""))}})
		e.wantRev(tr.Header, 4)
		tr = e.mustTxn(&pb.TxnRequest{Compare: []*pb.Compare{cmpValue("a", pb.Compare_EQUAL, "nope")}, Success: []*pb.RequestOp{opPut("z", "1")}})
		e.wantRev(tr.Header, 4)
		e.wantEqual("succeeded", tr.Succeeded, false)
		tr = e.mustTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opDelete("missing", "")}})
		e.wantRev(tr.Header, 4)
		e.wantRev(tr.Responses[0].GetResponseDeleteRange().Header, 4)
		tr = e.mustTxn(&pb.TxnRequest{})
		e.wantRev(tr.Header, 4)

		// Rewriting the same value is a change.
		p := e.mustPut("a", "2")
		e.wantRev(p.Header, 5)
		e.wantKVs(e.get("a").Kvs, kv("a", "2", 2, 5, 3))

		// Delete then re-create: new create_revision, version restarts.
		e.wantRev(e.mustDelete(&pb.DeleteRangeRequest{Key: []byte("a")}).Header, 6)
		e.wantKVs(e.get("a").Kvs)
		e.wantRev(e.mustPut("a", "3").Header, 7)
		e.wantKVs(e.get("a").Kvs, kv("a", "3", 7, 7, 1))
		old := e.mustRange(&pb.RangeRequest{Key: []byte("a"), Revision: 5})
		e.wantKVs(old.Kvs, kv("a", "2", 2, 5, 3))
		old = e.mustRange(&pb.RangeRequest{Key: []byte("a"), Revision: 6})
		e.wantKVs(old.Kvs)

		// A failed compare that runs a changing failure branch.
		tr = e.mustTxn(&pb.TxnRequest{
			Compare: []*pb.Compare{cmpValue("a", pb.Compare_EQUAL, "nope")},
			Success: []*pb.RequestOp{opPut("s", "1")},
			Failure: []*pb.RequestOp{opPut("f", "1"), opPut("g", "1")},
		})
		e.wantRev(tr.Header, 8)
		e.wantEqual("succeeded", tr.Succeeded, false)
		e.wantKVs(e.mustRange(rng("f", "h")).Kvs, kv("f", "1", 8, 8, 1), kv("g", "1", 8, 8, 1))
		e.wantKVs(e.get("s").Kvs)

		// Current revision: reading at it is fine, one past it is a future revision.
		e.wantKVs(e.mustRange(&pb.RangeRequest{Key: []byte("f"), Revision: 8}).Kvs, kv("f", "1", 8, 8, 1))
		_, err := e.Range(&pb.RangeRequest{Key: []byte("f"), Revision: 9})
		e.wantErr(err, rpctypes.ErrGRPCFutureRev)
	})
}
