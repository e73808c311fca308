package compat

import (
	"bytes"
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/metastore-dev/metastore/tests/framework"
)

var results = []pb.Compare_CompareResult{pb.Compare_EQUAL, pb.Compare_NOT_EQUAL, pb.Compare_GREATER, pb.Compare_LESS}

func holds(res pb.Compare_CompareResult, c int) bool {
	switch res {
	case pb.Compare_EQUAL:
		return c == 0
	case pb.Compare_NOT_EQUAL:
		return c != 0
	case pb.Compare_GREATER:
		return c > 0
	default:
		return c < 0
	}
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// checkCompare runs a read-only txn with one compare and asserts the branch.
func checkCompare(e *env, c *pb.Compare, want bool) {
	e.t.Helper()
	rev := e.rev()
	r := e.mustTxn(&pb.TxnRequest{
		Compare: []*pb.Compare{c},
		Success: []*pb.RequestOp{opRange(rng("cmp-success-probe", ""))},
		Failure: []*pb.RequestOp{opRange(rng("cmp-failure-probe", "")), opRange(rng("cmp-failure-probe", ""))},
	})
	if r.Succeeded != want {
		e.t.Errorf("compare %v: succeeded = %v, want %v", c, r.Succeeded, want)
	}
	wantN := 1
	if !want {
		wantN = 2
	}
	if len(r.Responses) != wantN {
		e.t.Errorf("compare %v: %d responses, want %d", c, len(r.Responses), wantN)
	}
	e.wantRev(r.Header, rev)
}

func TestTxnCompare(t *testing.T) {
	scenario(t, framework.Options{}, func(e *env) {
		e.mustPut("k", "m")        // 2
		e.mustPut("k", "m")        // 3: k value m, create 2, mod 3, version 2, lease 0
		e.mustPut("r/1", "a")      // 4
		e.mustPut("r/2", "b")      // 5
		e.mustPut("same/1", "eq")  // 6
		e.mustPut("same/2", "eq")  // 7
		e.mustPut("zz-after", "x") // 8

		e.run("value", func(e *env) {
			for _, res := range results {
				for _, v := range []string{"a", "m", "z", "", "m\x00", "l\xff"} {
					checkCompare(e, cmpValue("k", res, v), holds(res, bytes.Compare([]byte("m"), []byte(v))))
				}
			}
		})
		ints := []struct {
			name string
			mk   func(string, pb.Compare_CompareResult, int64) *pb.Compare
			have int64
		}{
			{"version", cmpVersion, 2},
			{"create", cmpCreate, 2},
			{"mod", cmpMod, 3},
			{"lease", cmpLease, 0},
		}
		for _, it := range ints {
			e.run(it.name, func(e *env) {
				for _, res := range results {
					for _, v := range []int64{it.have - 1, it.have, it.have + 1, 0, 1 << 40} {
						checkCompare(e, it.mk("k", res, v), holds(res, cmpInt(it.have, v)))
					}
				}
			})
		}
		e.run("missing-key", func(e *env) {
			for _, res := range results {
				// a value compare on a missing key always fails
				checkCompare(e, cmpValue("nope", res, ""), false)
				checkCompare(e, cmpValue("nope", res, "x"), false)
				for _, it := range ints {
					for _, v := range []int64{-1, 0, 1} {
						checkCompare(e, it.mk("nope", res, v), holds(res, cmpInt(0, v)))
					}
				}
			}
		})
		e.run("range", func(e *env) {
			end := prefixEnd("r/")
			withEnd := func(c *pb.Compare, end string) *pb.Compare { c.RangeEnd = []byte(end); return c }
			// every key in the range must satisfy the compare
			checkCompare(e, withEnd(cmpVersion("r/", pb.Compare_EQUAL, 1), end), true)
			checkCompare(e, withEnd(cmpValue("r/", pb.Compare_EQUAL, "a"), end), false)
			checkCompare(e, withEnd(cmpValue("r/", pb.Compare_GREATER, "0"), end), true)
			checkCompare(e, withEnd(cmpValue("r/", pb.Compare_LESS, "b"), end), false)
			checkCompare(e, withEnd(cmpValue("same/", pb.Compare_EQUAL, "eq"), prefixEnd("same/")), true)
			checkCompare(e, withEnd(cmpMod("r/", pb.Compare_GREATER, 4), end), false)
			checkCompare(e, withEnd(cmpMod("r/", pb.Compare_GREATER, 3), end), true)
			checkCompare(e, withEnd(cmpCreate("r/", pb.Compare_LESS, 6), end), true)
			checkCompare(e, withEnd(cmpLease("r/", pb.Compare_EQUAL, 0), end), true)
			// an empty range behaves as one missing key
			checkCompare(e, withEnd(cmpVersion("x/", pb.Compare_EQUAL, 0), prefixEnd("x/")), true)
			checkCompare(e, withEnd(cmpValue("x/", pb.Compare_EQUAL, ""), prefixEnd("x/")), false)
			checkCompare(e, withEnd(cmpCreate("x/", pb.Compare_GREATER, 0), prefixEnd("x/")), false)
			// from-key ("\x00" end)
			checkCompare(e, withEnd(cmpVersion("zz", pb.Compare_EQUAL, 1), "\x00"), true)
			checkCompare(e, withEnd(cmpVersion("k", pb.Compare_EQUAL, 1), "\x00"), false)
			checkCompare(e, withEnd(cmpCreate("\x00", pb.Compare_GREATER, 1), "\x00"), true)
		})
		e.run("multiple", func(e *env) {
			rev := e.rev()
			both := func(cs ...*pb.Compare) bool {
				r := e.mustTxn(&pb.TxnRequest{Compare: cs})
				e.wantRev(r.Header, rev)
				return r.Succeeded
			}
			e.wantEqual("all hold", both(cmpValue("k", pb.Compare_EQUAL, "m"), cmpVersion("k", pb.Compare_EQUAL, 2), cmpMod("r/1", pb.Compare_EQUAL, 4)), true)
			e.wantEqual("one fails", both(cmpValue("k", pb.Compare_EQUAL, "m"), cmpVersion("k", pb.Compare_EQUAL, 3)), false)
			e.wantEqual("first fails", both(cmpValue("k", pb.Compare_EQUAL, "n"), cmpVersion("k", pb.Compare_EQUAL, 2)), false)
			e.wantEqual("no compares", both(), true)
		})
		e.run("empty-key", func(e *env) {
			_, err := e.Txn(&pb.TxnRequest{Compare: []*pb.Compare{cmpValue("", pb.Compare_EQUAL, "x")}})
			e.wantErr(err, rpctypes.ErrGRPCEmptyKey)
		})
	})
}

func TestTxnOps(t *testing.T) {
	scenario(t, framework.Options{}, func(e *env) {
		e.mustPut("a", "1") // 2
		e.mustPut("b", "1") // 3

		e.run("branches", func(e *env) {
			r := e.mustTxn(&pb.TxnRequest{
				Compare: []*pb.Compare{cmpValue("a", pb.Compare_EQUAL, "1")},
				Success: []*pb.RequestOp{opPutReq(&pb.PutRequest{Key: []byte("a"), Value: []byte("2"), PrevKv: true}), opRange(rng("a", "c")), opDelete("b", "")},
				Failure: []*pb.RequestOp{opPut("never", "1")},
			})
			e.wantRev(r.Header, 4)
			e.wantEqual("succeeded", r.Succeeded, true)
			e.wantEqual("responses", len(r.Responses), 3)
			e.wantKVs(nilSafe(r.Responses[0].GetResponsePut().PrevKv), kv("a", "1", 2, 2, 1))
			e.wantKVs(r.Responses[1].GetResponseRange().Kvs, kv("a", "2", 2, 4, 2), kv("b", "1", 3, 3, 1))
			e.wantEqual("deleted", r.Responses[2].GetResponseDeleteRange().Deleted, int64(1))
			e.wantKVs(e.get("never").Kvs)
		})
		e.run("range-options-in-txn", func(e *env) {
			r := e.mustTxn(&pb.TxnRequest{Success: []*pb.RequestOp{
				opRange(&pb.RangeRequest{Key: []byte("a"), Revision: 3}),
				opRange(&pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"), CountOnly: true}),
				opRange(&pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"), KeysOnly: true, SortTarget: pb.RangeRequest_MOD, SortOrder: pb.RangeRequest_DESCEND}),
				opRange(&pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("c"), Revision: 3, Limit: 1}),
			}})
			e.wantRev(r.Header, 4)
			e.wantKVs(r.Responses[0].GetResponseRange().Kvs, kv("a", "1", 2, 2, 1))
			e.wantEqual("count", r.Responses[1].GetResponseRange().Count, int64(1))
			e.wantKVs(r.Responses[2].GetResponseRange().Kvs, keysOnly(kv("a", "2", 2, 4, 2))...)
			e.wantKVs(r.Responses[3].GetResponseRange().Kvs, kv("a", "1", 2, 2, 1))
			e.wantEqual("more", r.Responses[3].GetResponseRange().More, true)
		})
		e.run("nested", func(e *env) {
			// Nested compares see the state before the outer txn ran.
			r := e.mustTxn(&pb.TxnRequest{
				Compare: []*pb.Compare{cmpVersion("n", pb.Compare_EQUAL, 0)},
				Success: []*pb.RequestOp{
					opPut("n", "new"),
					opTxn(&pb.TxnRequest{
						Compare: []*pb.Compare{cmpValue("n", pb.Compare_EQUAL, "new")},
						Success: []*pb.RequestOp{opPut("hit", "1")},
						Failure: []*pb.RequestOp{opPut("miss", "1"), opRange(rng("n", ""))},
					}),
					opTxn(&pb.TxnRequest{
						Compare: []*pb.Compare{cmpValue("a", pb.Compare_EQUAL, "2")},
						Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{
							Success: []*pb.RequestOp{opPut("deep", "1"), opRange(rng("deep", ""))},
						})},
					}),
				},
			})
			e.wantRev(r.Header, 5)
			e.wantEqual("succeeded", r.Succeeded, true)
			inner := r.Responses[1].GetResponseTxn()
			e.wantEqual("inner succeeded", inner.Succeeded, false)
			e.wantEqual("inner responses", len(inner.Responses), 2)
			// the range in the nested txn sees the outer txn's earlier put
			e.wantKVs(inner.Responses[1].GetResponseRange().Kvs, kv("n", "new", 5, 5, 1))
			deep := r.Responses[2].GetResponseTxn()
			e.wantEqual("second inner succeeded", deep.Succeeded, true)
			deepest := deep.Responses[0].GetResponseTxn()
			e.wantEqual("deepest succeeded", deepest.Succeeded, true)
			e.wantKVs(deepest.Responses[1].GetResponseRange().Kvs, kv("deep", "1", 5, 5, 1))
			all := e.mustRange(rng("\x00", "\x00"))
			e.wantKeys(all.Kvs, "a", "deep", "miss", "n")
		})
		e.run("nested-failure-branch", func(e *env) {
			r := e.mustTxn(&pb.TxnRequest{
				Compare: []*pb.Compare{cmpVersion("n", pb.Compare_EQUAL, 0)},
				Success: []*pb.RequestOp{opPut("never", "1")},
				Failure: []*pb.RequestOp{opTxn(&pb.TxnRequest{
					Compare: []*pb.Compare{cmpVersion("n", pb.Compare_EQUAL, 1)},
					Success: []*pb.RequestOp{opDelete("miss", ""), opTxn(&pb.TxnRequest{})},
				})},
			})
			e.wantRev(r.Header, 6)
			e.wantEqual("succeeded", r.Succeeded, false)
			e.wantEqual("nested succeeded", r.Responses[0].GetResponseTxn().Succeeded, true)
			e.wantKVs(e.get("miss").Kvs)
		})
		e.run("duplicate-key", func(e *env) {
			rev := e.rev()
			for i, tr := range []*pb.TxnRequest{
				{Success: []*pb.RequestOp{opPut("a", "1"), opPut("a", "2")}},
				{Failure: []*pb.RequestOp{opPut("a", "1"), opPut("a", "2")}},
				{Success: []*pb.RequestOp{opPut("a", "1"), opDelete("a", "")}},
				{Success: []*pb.RequestOp{opDelete("a", "c"), opPut("b", "1")}},
				{Success: []*pb.RequestOp{opPut("b", "1"), opDelete("a", "c")}},
				{Success: []*pb.RequestOp{opPut("a", "1"), opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("a", "2")}})}},
				{Success: []*pb.RequestOp{opPut("a", "1"), opTxn(&pb.TxnRequest{Failure: []*pb.RequestOp{opPut("a", "2")}})}},
				{Success: []*pb.RequestOp{opDelete("a", ""), opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("a", "2")}})}},
				{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("a", "2")}}), opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("a", "2")}})}},
				{Success: []*pb.RequestOp{opPut("ok", "1")}, Failure: []*pb.RequestOp{opPut("a", "1"), opPut("a", "1")}},
			} {
				_, err := e.Txn(tr)
				e.t.Run(fmt.Sprint(i), func(t *testing.T) {
					ee := *e
					ee.t = t
					ee.wantErr(err, rpctypes.ErrGRPCDuplicateKey)
				})
			}
			// Not duplicates.
			for i, tr := range []*pb.TxnRequest{
				{Success: []*pb.RequestOp{opPut("a", "1")}, Failure: []*pb.RequestOp{opPut("a", "2")}},
				{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Compare: []*pb.Compare{cmpVersion("zzz", pb.Compare_EQUAL, 0)}, Success: []*pb.RequestOp{opPut("a", "3")}, Failure: []*pb.RequestOp{opPut("a", "4")}})}},
				{Success: []*pb.RequestOp{opDelete("a", ""), opDelete("a", "c"), opRange(rng("a", ""))}},
				{Success: []*pb.RequestOp{opPut("a", "5"), opRange(rng("a", "")), opRange(rng("a", ""))}},
			} {
				_, err := e.Txn(tr)
				if err != nil {
					e.t.Errorf("txn %d: unexpected error %v", i, err)
				}
			}
			e.wantRev(e.get("a").Header, rev+4)
			e.wantKVs(e.get("a").Kvs, kv("a", "5", rev+4, rev+4, 1))
		})
		e.run("empty-op", func(e *env) {
			_, err := e.Txn(&pb.TxnRequest{Success: []*pb.RequestOp{{}}})
			e.wantErr(err, rpctypes.ErrGRPCKeyNotFound)
			_, err = e.Txn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("", "1")}})
			e.wantErr(err, rpctypes.ErrGRPCEmptyKey)
			_, err = e.Txn(&pb.TxnRequest{Failure: []*pb.RequestOp{opRange(rng("", ""))}})
			e.wantErr(err, rpctypes.ErrGRPCEmptyKey)
			_, err = e.Txn(&pb.TxnRequest{Success: []*pb.RequestOp{opPutReq(&pb.PutRequest{Key: []byte("a"), Value: []byte("v"), IgnoreValue: true})}})
			e.wantErr(err, rpctypes.ErrGRPCValueProvided)
			_, err = e.Txn(&pb.TxnRequest{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPutReq(&pb.PutRequest{Key: []byte("a"), Lease: 5, IgnoreLease: true})}})}})
			e.wantErr(err, rpctypes.ErrGRPCLeaseProvided)
		})
		e.run("failing-op-fails-txn", func(e *env) {
			rev := e.rev()
			before := e.mustRange(rng("\x00", "\x00"))
			for i, c := range []struct {
				tr   *pb.TxnRequest
				want error
			}{
				{&pb.TxnRequest{Success: []*pb.RequestOp{opPut("x", "1"), opPutReq(&pb.PutRequest{Key: []byte("missing"), IgnoreValue: true})}}, rpctypes.ErrGRPCKeyNotFound},
				{&pb.TxnRequest{Success: []*pb.RequestOp{opPut("x", "1"), opPutReq(&pb.PutRequest{Key: []byte("missing"), IgnoreLease: true})}}, rpctypes.ErrGRPCKeyNotFound},
				{&pb.TxnRequest{Success: []*pb.RequestOp{opPut("x", "1"), opRange(&pb.RangeRequest{Key: []byte("a"), Revision: rev + 1})}}, rpctypes.ErrGRPCFutureRev},
				{&pb.TxnRequest{Success: []*pb.RequestOp{opPut("x", "1"), opPutReq(&pb.PutRequest{Key: []byte("y"), Value: []byte("1"), Lease: 0x77})}}, rpctypes.ErrGRPCLeaseNotFound},
				{&pb.TxnRequest{Success: []*pb.RequestOp{opPut("x", "1"), opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPutReq(&pb.PutRequest{Key: []byte("missing"), IgnoreValue: true})}})}}, rpctypes.ErrGRPCKeyNotFound},
				{&pb.TxnRequest{Compare: []*pb.Compare{cmpVersion("a", pb.Compare_EQUAL, 0)}, Failure: []*pb.RequestOp{opDelete("a", ""), opRange(&pb.RangeRequest{Key: []byte("a"), Revision: 1 << 40})}}, rpctypes.ErrGRPCFutureRev},
			} {
				_, err := e.Txn(c.tr)
				e.t.Run(fmt.Sprint(i), func(t *testing.T) {
					ee := *e
					ee.t = t
					ee.wantErr(err, c.want)
				})
			}
			after := e.mustRange(rng("\x00", "\x00"))
			e.wantRev(after.Header, rev)
			e.wantKVs(after.Kvs, before.Kvs...)
			// A bad op in the branch not taken does not matter.
			r := e.mustTxn(&pb.TxnRequest{
				Success: []*pb.RequestOp{opPut("x", "1")},
				Failure: []*pb.RequestOp{opPutReq(&pb.PutRequest{Key: []byte("missing"), IgnoreValue: true}), opRange(&pb.RangeRequest{Key: []byte("a"), Revision: 1 << 40})},
			})
			e.wantRev(r.Header, rev+1)
		})
	})
}

func manyPuts(prefix string, n int) []*pb.RequestOp {
	ops := make([]*pb.RequestOp, n)
	for i := range ops {
		ops[i] = opPut(fmt.Sprintf("%s%03d", prefix, i), "v")
	}
	return ops
}

func manyCompares(n int) []*pb.Compare {
	cs := make([]*pb.Compare, n)
	for i := range cs {
		cs[i] = cmpVersion(fmt.Sprintf("c%03d", i), pb.Compare_EQUAL, 0)
	}
	return cs
}

func TestTxnTooManyOps(t *testing.T) {
	t.Run("default-128", func(t *testing.T) {
		scenario(t, framework.Options{}, func(e *env) {
			_, err := e.Txn(&pb.TxnRequest{Success: manyPuts("k", 129)})
			e.wantErr(err, rpctypes.ErrGRPCTooManyOps)
			r := e.mustTxn(&pb.TxnRequest{Success: manyPuts("k", 128)})
			e.wantRev(r.Header, 2)
			e.wantEqual("count", e.mustRange(&pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), CountOnly: true}).Count, int64(128))
		})
	})
	t.Run("max-txn-ops-8", func(t *testing.T) {
		scenario(t, framework.Options{MaxTxnOps: 8}, func(e *env) {
			for i, tr := range []*pb.TxnRequest{
				{Success: manyPuts("s", 9)},
				{Failure: manyPuts("f", 9)},
				{Compare: manyCompares(9)},
				// nested: the nested txn may only use what the outer level left
				{Success: append(manyPuts("o", 4), opTxn(&pb.TxnRequest{Success: manyPuts("i", 5)}))},
				{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Success: manyPuts("i", 8)})}})}},
			} {
				_, err := e.Txn(tr)
				e.t.Run(fmt.Sprint(i), func(t *testing.T) {
					ee := *e
					ee.t = t
					ee.wantErr(err, rpctypes.ErrGRPCTooManyOps)
				})
			}
			rev := 1
			for i, tr := range []*pb.TxnRequest{
				{Success: manyPuts("s", 8), Failure: manyPuts("f", 8), Compare: manyCompares(8)},
				{Success: append(manyPuts("o", 4), opTxn(&pb.TxnRequest{Success: manyPuts("i", 3)}))},
			} {
				r, err := e.Txn(tr)
				if err != nil {
					e.t.Errorf("txn %d: %v", i, err)
					continue
				}
				rev++
				e.wantRev(r.Header, int64(rev))
			}
		})
	})
}
