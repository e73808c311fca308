package compat

import (
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/metastore-dev/metastore/tests/framework"
)

// TestQuotaExceeded is etcd's clientv3 TestKVPutError over raw stubs: with
// --quota-backend-bytes at 1.2 × 1.5 MiB + 32 KiB, a put of 1.5 MiB fits
// and a second one, a second later, fails with "database space exceeded"
// and raises the NOSPACE alarm; the quota is checked before the request
// is validated, so an empty key or a too-large value below the quota get
// their own errors. With the alarm on, puts, txns with puts and lease
// grants fail while reads, read-only txns and deletes work.
func TestQuotaExceeded(t *testing.T) {
	const maxReqBytes = 3 << 19 // 1.5 MiB, the default --max-request-bytes
	quota := int64(maxReqBytes*12/10 + 8*4096)
	scenario(t, framework.Options{QuotaBackendBytes: quota}, func(e *env) {
		big := strings.Repeat("a", maxReqBytes-50)
		_, err := e.Put(&pb.PutRequest{Value: []byte("bar")})
		e.wantErr(err, rpctypes.ErrGRPCEmptyKey)
		_, err = e.Put(&pb.PutRequest{Key: []byte("key"), Value: []byte(strings.Repeat("a", maxReqBytes+100))})
		e.wantErr(err, rpctypes.ErrGRPCRequestTooLarge)
		e.mustPut("foo1", big)
		time.Sleep(time.Second) // as etcd's test: its backend commits every 100 ms
		_, err = e.Put(&pb.PutRequest{Key: []byte("foo2"), Value: []byte(big)})
		e.wantErr(err, rpctypes.ErrGRPCNoSpace)

		ctx, cancel := e.ctx()
		defer cancel()
		a, err := e.maint.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_GET})
		var types []string
		if a != nil {
			for _, m := range a.Alarms {
				types = append(types, m.Alarm.String())
			}
		}
		e.record("Alarm(GET)", types, err)
		e.wantEqual("alarms", types, []string{"NOSPACE"})

		_, err = e.Put(&pb.PutRequest{Key: []byte("small"), Value: []byte("v")})
		e.wantErr(err, rpctypes.ErrGRPCNoSpace)
		_, err = e.Txn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("small", "v")}})
		e.wantErr(err, rpctypes.ErrGRPCNoSpace)
		_, err = e.Txn(&pb.TxnRequest{Failure: []*pb.RequestOp{opPut("small", "v")}})
		e.wantErr(err, rpctypes.ErrGRPCNoSpace)
		g, err := e.lease.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 60, ID: 7})
		e.record("LeaseGrant(7)", g, err)
		e.wantErr(err, rpctypes.ErrGRPCNoSpace)

		r := e.mustRange(&pb.RangeRequest{Key: []byte("foo1"), KeysOnly: true})
		e.wantKeys(r.Kvs, "foo1")
		e.mustTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opRange(rng("foo1", ""))}})
		d := e.mustDelete(&pb.DeleteRangeRequest{Key: []byte("foo1")})
		e.wantEqual("deleted", d.Deleted, int64(1))
	})
}
