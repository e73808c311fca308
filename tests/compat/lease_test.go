package compat

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/metastore-dev/metastore/tests/framework"
)

// Lease calls, recorded in the transcript. Remaining TTLs depend on timing:
// TimeToLive's TTL is recorded as granted-1 when it lies less than half the
// TTL (at most 20s) below the granted TTL (etcd truncates the remaining time, so a
// lease looked up within a second of its grant or renewal reads granted-1),
// and the keys it lists are sorted (etcd lists them in map order).

func (e *env) Grant(id, ttl int64) (*pb.LeaseGrantResponse, error) {
	ctx, cancel := e.ctx()
	defer cancel()
	r := &pb.LeaseGrantRequest{ID: id, TTL: ttl}
	resp, err := e.lease.LeaseGrant(ctx, r)
	e.record(fmt.Sprintf("LeaseGrant(%v)", r), resp, err)
	return resp, err
}

func (e *env) mustGrant(id, ttl int64) *pb.LeaseGrantResponse {
	e.t.Helper()
	resp, err := e.Grant(id, ttl)
	if err != nil {
		e.t.Fatalf("LeaseGrant(%d, %d): %v", id, ttl, err)
	}
	return resp
}

func (e *env) Revoke(id int64) (*pb.LeaseRevokeResponse, error) {
	ctx, cancel := e.ctx()
	defer cancel()
	r := &pb.LeaseRevokeRequest{ID: id}
	resp, err := e.lease.LeaseRevoke(ctx, r)
	e.record(fmt.Sprintf("LeaseRevoke(%v)", r), resp, err)
	return resp, err
}

func (e *env) TimeToLive(id int64, keys bool) *pb.LeaseTimeToLiveResponse {
	e.t.Helper()
	ctx, cancel := e.ctx()
	defer cancel()
	r := &pb.LeaseTimeToLiveRequest{ID: id, Keys: keys}
	resp, err := e.lease.LeaseTimeToLive(ctx, r)
	if err != nil {
		e.record(fmt.Sprintf("LeaseTimeToLive(%v)", r), nil, err)
		e.t.Fatalf("LeaseTimeToLive(%v): %v", r, err)
	}
	rec := *resp
	if rec.GrantedTTL > 0 && rec.TTL < rec.GrantedTTL && rec.TTL >= rec.GrantedTTL-min(20, rec.GrantedTTL/2) {
		rec.TTL = rec.GrantedTTL - 1
	}
	rec.Keys = slices.Clone(rec.Keys)
	slices.SortFunc(rec.Keys, bytes.Compare)
	e.record(fmt.Sprintf("LeaseTimeToLive(%v)", r), &rec, nil)
	return &rec
}

func (e *env) Leases() []int64 {
	e.t.Helper()
	ctx, cancel := e.ctx()
	defer cancel()
	resp, err := e.lease.LeaseLeases(ctx, &pb.LeaseLeasesRequest{})
	e.record("LeaseLeases()", resp, err)
	if err != nil {
		e.t.Fatalf("LeaseLeases: %v", err)
	}
	var ids []int64
	for _, l := range resp.Leases {
		ids = append(ids, l.ID)
	}
	return ids
}

// keepAlive sends one keep-alive per id on one stream and returns the
// responses, in order.
func (e *env) keepAlive(ids ...int64) []*pb.LeaseKeepAliveResponse {
	e.t.Helper()
	ctx, cancel := e.ctx()
	defer cancel()
	stream, err := e.lease.LeaseKeepAlive(ctx)
	if err != nil {
		e.t.Fatalf("LeaseKeepAlive: %v", err)
	}
	var out []*pb.LeaseKeepAliveResponse
	for _, id := range ids {
		if err := stream.Send(&pb.LeaseKeepAliveRequest{ID: id}); err != nil {
			e.t.Fatalf("keep-alive send: %v", err)
		}
		resp, err := stream.Recv()
		e.record(fmt.Sprintf("LeaseKeepAlive(%d)", id), resp, err)
		if err != nil {
			e.t.Fatalf("keep-alive recv: %v", err)
		}
		out = append(out, resp)
	}
	stream.CloseSend()
	return out
}

func (e *env) wantTTL(got *pb.LeaseTimeToLiveResponse, ttl, granted int64, keys ...string) {
	e.t.Helper()
	if got.TTL != ttl || got.GrantedTTL != granted {
		e.t.Errorf("TimeToLive(%x): ttl %d granted %d, want %d and %d", got.ID, got.TTL, got.GrantedTTL, ttl, granted)
	}
	var gotKeys []string
	for _, k := range got.Keys {
		gotKeys = append(gotKeys, string(k))
	}
	if !slices.Equal(gotKeys, keys) {
		e.t.Errorf("TimeToLive(%x) keys %q, want %q", got.ID, gotKeys, keys)
	}
}

func TestLeaseGrant(t *testing.T) {
	scenario(t, framework.Options{}, func(e *env) {
		e.run("client-id", func(e *env) {
			g := e.mustGrant(0x1001, 60)
			if g.ID != 0x1001 || g.TTL != 60 || g.Error != "" {
				e.t.Errorf("grant = %v, want id 0x1001 ttl 60", g)
			}
			e.wantRev(g.Header, 1)
			_, err := e.Grant(0x1001, 30)
			e.wantErr(err, rpctypes.ErrGRPCLeaseExist)
			e.wantTTL(e.TimeToLive(0x1001, false), 59, 60)
		})
		e.run("ttl-limits", func(e *env) {
			_, err := e.Grant(0x1002, 9000000001)
			e.wantErr(err, rpctypes.ErrGRPCLeaseTTLTooLarge)
			// checked before the id's existence
			_, err = e.Grant(0x1001, 9000000001)
			e.wantErr(err, rpctypes.ErrGRPCLeaseTTLTooLarge)
			if g := e.mustGrant(0x1003, 9000000000); g.TTL != 9000000000 {
				e.t.Errorf("max TTL granted as %d", g.TTL)
			}
			// Below the minimum (2s with etcd's default election timeout):
			// raised, and the raised TTL returned.
			for i, ttl := range []int64{1, 0, -7} {
				if g := e.mustGrant(0x1100+int64(i), ttl); g.TTL != 2 {
					e.t.Errorf("grant with TTL %d: granted %d, want the minimum 2", ttl, g.TTL)
				}
			}
		})
		e.run("negative-id", func(e *env) {
			if g := e.mustGrant(-5, 60); g.ID != -5 {
				e.t.Errorf("grant -5 = %v", g)
			}
			e.wantTTL(e.TimeToLive(-5, false), 59, 60)
		})
		e.run("server-id", func(e *env) {
			ctx, cancel := e.ctx()
			defer cancel()
			seen := map[int64]bool{}
			for range 20 {
				g, err := e.lease.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 60})
				if err != nil {
					e.t.Fatal(err)
				}
				if g.ID <= 0 || seen[g.ID] {
					e.t.Fatalf("server-chosen id %d: want positive and unique", g.ID)
				}
				seen[g.ID] = true
			}
		})
	})
}

func TestLeaseAttach(t *testing.T) {
	scenario(t, framework.Options{}, func(e *env) {
		e.mustGrant(0x2001, 60)
		e.mustGrant(0x2002, 60)
		e.run("put-attaches", func(e *env) {
			e.mustPutReq(&pb.PutRequest{Key: []byte("b"), Value: []byte("1"), Lease: 0x2001})
			e.mustPutReq(&pb.PutRequest{Key: []byte("a"), Value: []byte("1"), Lease: 0x2001})
			e.mustPutReq(&pb.PutRequest{Key: []byte("c"), Value: []byte("1"), Lease: 0x2002})
			e.wantTTL(e.TimeToLive(0x2001, true), 59, 60, "a", "b")
			e.wantTTL(e.TimeToLive(0x2002, true), 59, 60, "c")
			if got := e.get("a").Kvs[0].Lease; got != 0x2001 {
				e.t.Errorf("a.lease = %x", got)
			}
		})
		e.run("put-moves-or-drops", func(e *env) {
			e.mustPutReq(&pb.PutRequest{Key: []byte("b"), Value: []byte("2"), Lease: 0x2002})
			e.mustPutReq(&pb.PutRequest{Key: []byte("a"), Value: []byte("2")})
			e.wantTTL(e.TimeToLive(0x2001, true), 59, 60)
			e.wantTTL(e.TimeToLive(0x2002, true), 59, 60, "b", "c")
			// ignore_lease keeps the attachment
			e.mustPutReq(&pb.PutRequest{Key: []byte("b"), Value: []byte("3"), IgnoreLease: true})
			e.wantTTL(e.TimeToLive(0x2002, true), 59, 60, "b", "c")
		})
		e.run("delete-detaches", func(e *env) {
			e.mustDelete(&pb.DeleteRangeRequest{Key: []byte("c")})
			e.wantTTL(e.TimeToLive(0x2002, true), 59, 60, "b")
			// A key deleted and put again without a lease stays detached.
			e.mustPut("c", "x")
			e.wantTTL(e.TimeToLive(0x2002, true), 59, 60, "b")
		})
		e.run("txn", func(e *env) {
			e.mustTxn(&pb.TxnRequest{
				Compare: []*pb.Compare{cmpLease("b", pb.Compare_EQUAL, 0x2002)},
				Success: []*pb.RequestOp{opPutReq(&pb.PutRequest{Key: []byte("t"), Value: []byte("1"), Lease: 0x2001})},
			})
			e.wantTTL(e.TimeToLive(0x2001, true), 59, 60, "t")
			rev := e.rev()
			_, err := e.Txn(&pb.TxnRequest{Success: []*pb.RequestOp{
				opPut("u", "1"),
				opPutReq(&pb.PutRequest{Key: []byte("v"), Value: []byte("1"), Lease: 0x2999}),
			}})
			e.wantErr(err, rpctypes.ErrGRPCLeaseNotFound)
			e.wantRev(e.get("u").Header, rev)
		})
		e.run("unknown-lease", func(e *env) {
			_, err := e.Put(&pb.PutRequest{Key: []byte("x"), Value: []byte("1"), Lease: 0x2999})
			e.wantErr(err, rpctypes.ErrGRPCLeaseNotFound)
		})
	})
}

func TestLeaseRevoke(t *testing.T) {
	scenario(t, framework.Options{}, func(e *env) {
		e.mustGrant(0x3001, 60)
		e.mustPutReq(&pb.PutRequest{Key: []byte("z"), Value: []byte("1"), Lease: 0x3001})
		e.mustPutReq(&pb.PutRequest{Key: []byte("x"), Value: []byte("1"), Lease: 0x3001})
		e.mustPutReq(&pb.PutRequest{Key: []byte("y"), Value: []byte("1"), Lease: 0x3001})
		e.mustPut("w", "1")
		e.run("deletes-keys-in-one-revision", func(e *env) {
			rev := e.rev()
			r, err := e.Revoke(0x3001)
			if err != nil {
				e.t.Fatal(err)
			}
			e.wantRev(r.Header, rev+1)
			e.wantKeys(e.mustRange(rng("a", "zz")).Kvs, "w")
			e.wantKeys(e.mustRange(&pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("zz"), Revision: rev}).Kvs, "w", "x", "y", "z")
			e.wantTTL(e.TimeToLive(0x3001, true), -1, 0)
			e.wantEqual("keep-alive TTL", e.keepAlive(0x3001)[0].TTL, int64(0))
		})
		e.run("again", func(e *env) {
			_, err := e.Revoke(0x3001)
			e.wantErr(err, rpctypes.ErrGRPCLeaseNotFound)
			_, err = e.Revoke(0x3999)
			e.wantErr(err, rpctypes.ErrGRPCLeaseNotFound)
		})
		e.run("without-keys", func(e *env) {
			e.mustGrant(0x3002, 60)
			rev := e.rev()
			r, err := e.Revoke(0x3002)
			if err != nil {
				e.t.Fatal(err)
			}
			e.wantRev(r.Header, rev)
		})
		e.run("regrant-same-id", func(e *env) {
			e.mustGrant(0x3001, 30)
			e.wantTTL(e.TimeToLive(0x3001, true), 29, 30)
		})
	})
}

func TestLeaseKeepAliveAndList(t *testing.T) {
	scenario(t, framework.Options{}, func(e *env) {
		e.mustGrant(0x4003, 30)
		e.mustGrant(0x4001, 10)
		e.mustGrant(0x4002, 20)
		e.run("keep-alive", func(e *env) {
			rev := e.rev()
			rs := e.keepAlive(0x4001, 0x4999, 0x4002, 0x4001)
			for i, want := range []int64{10, 0, 20, 10} {
				if rs[i].TTL != want {
					e.t.Errorf("keep-alive %d: TTL %d, want %d", i, rs[i].TTL, want)
				}
				e.wantRev(rs[i].Header, rev)
			}
			if rs[1].ID != 0x4999 {
				e.t.Errorf("keep-alive of an unknown lease answered for %x", rs[1].ID)
			}
		})
		e.run("time-to-live-unknown", func(e *env) {
			got := e.TimeToLive(0x4999, true)
			if got.TTL != -1 || got.ID != 0x4999 || got.GrantedTTL != 0 || len(got.Keys) != 0 {
				e.t.Errorf("TimeToLive(unknown) = %v, want ttl -1", got)
			}
		})
		e.run("list-by-expiry", func(e *env) {
			if ids := e.Leases(); !slices.Equal(ids, []int64{0x4001, 0x4002, 0x4003}) {
				e.t.Errorf("Leases() = %x, want soonest expiry first", ids)
			}
			e.mustGrant(0x4000, 5)
			if _, err := e.Revoke(0x4002); err != nil {
				e.t.Fatal(err)
			}
			if ids := e.Leases(); !slices.Equal(ids, []int64{0x4000, 0x4001, 0x4003}) {
				e.t.Errorf("Leases() = %x", ids)
			}
		})
	})
}

// TestLeaseExpiry lets a lease with keys expire: the keys go in one
// revision, the lease is gone, a keep-alive answers TTL 0. A lease kept
// alive past its TTL survives.
func TestLeaseExpiry(t *testing.T) {
	scenario(t, framework.Options{}, func(e *env) {
		e.mustGrant(0x5001, 2)
		e.mustGrant(0x5002, 3)
		e.mustPutReq(&pb.PutRequest{Key: []byte("e/1"), Value: []byte("1"), Lease: 0x5001})
		e.mustPutReq(&pb.PutRequest{Key: []byte("e/2"), Value: []byte("1"), Lease: 0x5001})
		e.mustPutReq(&pb.PutRequest{Key: []byte("k/1"), Value: []byte("1"), Lease: 0x5002})
		rev := e.rev()
		deadline := time.Now().Add(3500 * time.Millisecond)
		for time.Now().Before(deadline) {
			// Not recorded: how many keep-alives fit depends on timing.
			ctx, cancel := e.ctx()
			stream, err := e.lease.LeaseKeepAlive(ctx)
			if err == nil && stream.Send(&pb.LeaseKeepAliveRequest{ID: 0x5002}) == nil {
				if r, err := stream.Recv(); err != nil || r.TTL != 3 {
					e.t.Errorf("keep-alive: %v, %v", r, err)
				}
			}
			cancel()
			time.Sleep(400 * time.Millisecond)
		}
		waitFor(e, 10*time.Second, func() bool { return len(e.mustRangeQuiet("e/", "e0").Kvs) == 0 })
		if got := e.rev(); got != rev+1 {
			e.t.Errorf("revision after expiry %d, want %d (both keys in one revision)", got, rev+1)
		}
		e.wantKeys(e.mustRange(rng("e/", "e0")).Kvs)
		e.wantKeys(e.mustRange(rng("k/", "k0")).Kvs, "k/1")
		e.wantTTL(e.TimeToLive(0x5001, true), -1, 0)
		e.wantEqual("keep-alive TTL", e.keepAlive(0x5001)[0].TTL, int64(0))
		if ids := e.Leases(); !slices.Equal(ids, []int64{0x5002}) {
			e.t.Errorf("Leases() = %x, want only the kept-alive lease", ids)
		}
		// etcd's metric for expiries, on the client port's /metrics.
		resp, err := http.Get("http://" + e.srv.Endpoint + "/metrics")
		if err != nil {
			e.t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		// NB: in-process etcd servers share Prometheus' global registry, so
		// etcd's count includes other tests' expiries.
		m := regexp.MustCompile(`(?m)^etcd_debugging_server_lease_expired_total ([0-9.e+]+)$`).FindSubmatch(body)
		if len(m) != 2 {
			e.t.Errorf("/metrics lacks etcd_debugging_server_lease_expired_total")
		} else if n, err := strconv.ParseFloat(string(m[1]), 64); err != nil || n < 1 {
			e.t.Errorf("/metrics: etcd_debugging_server_lease_expired_total %s, want at least 1", m[1])
		}
	})
}

// mustRangeQuiet is an unrecorded range, for polling.
func (e *env) mustRangeQuiet(key, end string) *pb.RangeResponse {
	e.t.Helper()
	ctx, cancel := e.ctx()
	defer cancel()
	resp, err := e.kv.Range(ctx, rng(key, end))
	if err != nil {
		e.t.Fatalf("range: %v", err)
	}
	return resp
}

func waitFor(e *env, d time.Duration, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
