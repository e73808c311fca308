package compat

import (
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/metastore-dev/metastore/tests/framework"
)

func TestPut(t *testing.T) {
	scenario(t, framework.Options{}, func(e *env) {
		e.run("prev-kv", func(e *env) {
			p := e.mustPutReq(&pb.PutRequest{Key: []byte("k"), Value: []byte("v1"), PrevKv: true})
			e.wantRev(p.Header, 2)
			if p.PrevKv != nil {
				e.t.Errorf("prev_kv of a new key = %v, want nil", p.PrevKv)
			}
			p = e.mustPutReq(&pb.PutRequest{Key: []byte("k"), Value: []byte("v2"), PrevKv: true})
			e.wantRev(p.Header, 3)
			e.wantKVs(nilSafe(p.PrevKv), kv("k", "v1", 2, 2, 1))
			p = e.mustPutReq(&pb.PutRequest{Key: []byte("k"), Value: []byte("v3")})
			if p.PrevKv != nil {
				e.t.Errorf("prev_kv without the option = %v, want nil", p.PrevKv)
			}
			e.wantKVs(e.get("k").Kvs, kv("k", "v3", 2, 4, 3))
		})
		e.run("ignore-value-missing-key", func(e *env) {
			before := e.rev()
			_, err := e.Put(&pb.PutRequest{Key: []byte("missing"), IgnoreValue: true})
			e.wantErr(err, rpctypes.ErrGRPCKeyNotFound)
			_, err = e.Put(&pb.PutRequest{Key: []byte("missing"), IgnoreLease: true})
			e.wantErr(err, rpctypes.ErrGRPCKeyNotFound)
			_, err = e.Put(&pb.PutRequest{Key: []byte("missing"), IgnoreValue: true, IgnoreLease: true, PrevKv: true})
			e.wantErr(err, rpctypes.ErrGRPCKeyNotFound)
			e.wantRev(e.get("missing").Header, before)
		})
		e.run("ignore-value-with-value", func(e *env) {
			_, err := e.Put(&pb.PutRequest{Key: []byte("k"), Value: []byte("x"), IgnoreValue: true})
			e.wantErr(err, rpctypes.ErrGRPCValueProvided)
			// checked before the key's existence
			_, err = e.Put(&pb.PutRequest{Key: []byte("missing"), Value: []byte("x"), IgnoreValue: true})
			e.wantErr(err, rpctypes.ErrGRPCValueProvided)
		})
		e.run("ignore-lease-with-lease", func(e *env) {
			_, err := e.Put(&pb.PutRequest{Key: []byte("k"), Lease: 12345, IgnoreLease: true})
			e.wantErr(err, rpctypes.ErrGRPCLeaseProvided)
			_, err = e.Put(&pb.PutRequest{Key: []byte("missing"), Lease: 12345, IgnoreLease: true})
			e.wantErr(err, rpctypes.ErrGRPCLeaseProvided)
		})
		e.run("ignore-value", func(e *env) {
			rev := e.rev()
			p := e.mustPutReq(&pb.PutRequest{Key: []byte("k"), IgnoreValue: true, PrevKv: true})
			e.wantRev(p.Header, rev+1)
			e.wantKVs(nilSafe(p.PrevKv), kv("k", "v3", 2, 4, 3))
			e.wantKVs(e.get("k").Kvs, kv("k", "v3", 2, rev+1, 4))
		})
		e.run("ignore-lease", func(e *env) {
			rev := e.rev()
			p := e.mustPutReq(&pb.PutRequest{Key: []byte("k"), Value: []byte("v4"), IgnoreLease: true})
			e.wantRev(p.Header, rev+1)
			e.wantKVs(e.get("k").Kvs, kv("k", "v4", 2, rev+1, 5))
			p = e.mustPutReq(&pb.PutRequest{Key: []byte("k"), IgnoreValue: true, IgnoreLease: true})
			e.wantRev(p.Header, rev+2)
			e.wantKVs(e.get("k").Kvs, kv("k", "v4", 2, rev+2, 6))
		})
		e.run("lease-not-found", func(e *env) {
			rev := e.rev()
			_, err := e.Put(&pb.PutRequest{Key: []byte("leased"), Value: []byte("v"), Lease: 0x1234})
			e.wantErr(err, rpctypes.ErrGRPCLeaseNotFound)
			_, err = e.Put(&pb.PutRequest{Key: []byte("k"), Value: []byte("v"), Lease: 0x1234})
			e.wantErr(err, rpctypes.ErrGRPCLeaseNotFound)
			e.wantKVs(e.get("leased").Kvs)
			e.wantRev(e.get("k").Header, rev)
		})
		e.run("empty-key", func(e *env) {
			_, err := e.Put(&pb.PutRequest{Value: []byte("v")})
			e.wantErr(err, rpctypes.ErrGRPCEmptyKey)
			// an empty key is reported before the ignore_* checks
			_, err = e.Put(&pb.PutRequest{Value: []byte("v"), IgnoreValue: true})
			e.wantErr(err, rpctypes.ErrGRPCEmptyKey)
		})
		e.run("empty-value-and-binary-keys", func(e *env) {
			rev := e.rev()
			e.mustPut("empty", "")
			e.wantKVs(e.get("empty").Kvs, kv("empty", "", rev+1, rev+1, 1))
			bin := "b\x00\xff\x01"
			e.mustPut(bin, "\x00\x01\xff")
			e.wantKVs(e.get(bin).Kvs, kv(bin, "\x00\x01\xff", rev+2, rev+2, 1))
			e.mustPut("\xff\xff", "top")
			e.wantKVs(e.mustRange(rng("\xff", "\x00")).Kvs, kv("\xff\xff", "top", rev+3, rev+3, 1))
			e.wantKVs(e.mustRange(rng("b", "b\x01")).Kvs, kv(bin, "\x00\x01\xff", rev+2, rev+2, 1))
		})
	})
}

func TestDeleteRange(t *testing.T) {
	scenario(t, framework.Options{}, func(e *env) {
		for _, k := range []string{"a", "b", "c", "d/1", "d/2", "d/3", "e", "f"} { // revs 2..9
			e.mustPut(k, "v-"+k)
		}
		e.run("single-prev-kv", func(e *env) {
			d := e.mustDelete(&pb.DeleteRangeRequest{Key: []byte("a"), PrevKv: true})
			e.wantRev(d.Header, 10)
			e.wantEqual("deleted", d.Deleted, int64(1))
			e.wantKVs(d.PrevKvs, kv("a", "v-a", 2, 2, 1))
			e.wantKVs(e.get("a").Kvs)
			e.wantKVs(e.mustRange(&pb.RangeRequest{Key: []byte("a"), Revision: 9}).Kvs, kv("a", "v-a", 2, 2, 1))
		})
		e.run("without-prev-kv", func(e *env) {
			d := e.mustDelete(&pb.DeleteRangeRequest{Key: []byte("b")})
			e.wantRev(d.Header, 11)
			e.wantEqual("deleted", d.Deleted, int64(1))
			e.wantKVs(d.PrevKvs)
		})
		e.run("nothing", func(e *env) {
			d := e.mustDelete(&pb.DeleteRangeRequest{Key: []byte("a"), PrevKv: true})
			e.wantRev(d.Header, 11)
			e.wantEqual("deleted", d.Deleted, int64(0))
			e.wantKVs(d.PrevKvs)
			d = e.mustDelete(&pb.DeleteRangeRequest{Key: []byte("x/"), RangeEnd: []byte(prefixEnd("x/")), PrevKv: true})
			e.wantRev(d.Header, 11)
			e.wantEqual("deleted", d.Deleted, int64(0))
			d = e.mustDelete(&pb.DeleteRangeRequest{Key: []byte("z"), RangeEnd: []byte("\x00")})
			e.wantRev(d.Header, 11)
			d = e.mustDelete(&pb.DeleteRangeRequest{Key: []byte("f"), RangeEnd: []byte("a")}) // end before key
			e.wantRev(d.Header, 11)
			e.wantEqual("deleted", d.Deleted, int64(0))
			e.wantRev(e.get("a").Header, 11)
		})
		e.run("prefix", func(e *env) {
			d := e.mustDelete(&pb.DeleteRangeRequest{Key: []byte("d/"), RangeEnd: []byte(prefixEnd("d/")), PrevKv: true})
			e.wantRev(d.Header, 12)
			e.wantEqual("deleted", d.Deleted, int64(3))
			e.wantKVs(d.PrevKvs, kv("d/1", "v-d/1", 5, 5, 1), kv("d/2", "v-d/2", 6, 6, 1), kv("d/3", "v-d/3", 7, 7, 1))
			e.wantKVs(e.mustRange(rng("d/", prefixEnd("d/"))).Kvs)
			// all three deletions share revision 12: visible at 11, gone at 12
			e.wantEqual("count at 11", e.mustRange(&pb.RangeRequest{Key: []byte("d/"), RangeEnd: []byte(prefixEnd("d/")), Revision: 11}).Count, int64(3))
			e.wantEqual("count at 12", e.mustRange(&pb.RangeRequest{Key: []byte("d/"), RangeEnd: []byte(prefixEnd("d/")), Revision: 12}).Count, int64(0))
		})
		e.run("range", func(e *env) {
			e.mustPut("c2", "v") // 13
			d := e.mustDelete(&pb.DeleteRangeRequest{Key: []byte("c"), RangeEnd: []byte("d"), PrevKv: true})
			e.wantRev(d.Header, 14)
			e.wantEqual("deleted", d.Deleted, int64(2))
			e.wantKVs(d.PrevKvs, kv("c", "v-c", 4, 4, 1), kv("c2", "v", 13, 13, 1))
		})
		e.run("from-key", func(e *env) {
			e.mustPut("g", "v") // 15
			d := e.mustDelete(&pb.DeleteRangeRequest{Key: []byte("f"), RangeEnd: []byte("\x00"), PrevKv: true})
			e.wantRev(d.Header, 16)
			e.wantEqual("deleted", d.Deleted, int64(2))
			e.wantKVs(d.PrevKvs, kv("f", "v-f", 9, 9, 1), kv("g", "v", 15, 15, 1))
			e.wantKVs(e.mustRange(rng("\x00", "\x00")).Kvs, kv("e", "v-e", 8, 8, 1))
		})
		e.run("all", func(e *env) {
			e.mustPut("h", "v") // 17
			d := e.mustDelete(&pb.DeleteRangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00")})
			e.wantRev(d.Header, 18)
			e.wantEqual("deleted", d.Deleted, int64(2))
			r := e.mustRange(rng("\x00", "\x00"))
			e.wantKVs(r.Kvs)
			e.wantEqual("count", r.Count, int64(0))
		})
		e.run("recreate", func(e *env) {
			p := e.mustPut("a", "again")
			e.wantRev(p.Header, 19)
			e.wantKVs(e.get("a").Kvs, kv("a", "again", 19, 19, 1))
		})
		e.run("empty-key", func(e *env) {
			_, err := e.Delete(&pb.DeleteRangeRequest{})
			e.wantErr(err, rpctypes.ErrGRPCEmptyKey)
			_, err = e.Delete(&pb.DeleteRangeRequest{RangeEnd: []byte("\x00")})
			e.wantErr(err, rpctypes.ErrGRPCEmptyKey)
		})
	})
}
