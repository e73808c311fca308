package compat

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/tests/framework"
)

// TestAuthLease calls every lease RPC with auth enabled as each kind of
// caller and requires metastore's answers to equal etcd's: grant needs an
// authenticated user; revoke and keep-alive need WRITE on every key of the
// lease, TimeToLive with keys and Leases READ on them; root needs nothing;
// a put attaching a key to a lease needs WRITE on the lease's other keys.
func TestAuthLease(t *testing.T) {
	scenario(t, framework.Options{}, func(e *env) {
		a := newAuthEnv(e)
		lc := pb.NewLeaseClient(a.conn)
		a.setupRootAndEnable()
		root := func() caller { return a.as("root", "rootpw") }
		_, err := a.UserAdd(root(), &pb.AuthUserAddRequest{Name: "alice", Password: "alicepw"})
		a.must(err)
		_, err = a.RoleAdd(root(), "ra")
		a.must(err)
		_, err = a.RoleGrant(root(), "ra", authpb.READWRITE, "a/", "a0")
		a.must(err)
		_, err = a.RoleGrant(root(), "ra", authpb.WRITE, "w/", "w0")
		a.must(err)
		_, err = a.UserGrantRole(root(), "alice", "ra")
		a.must(err)

		grant := func(c caller, id int64) (any, error) {
			return a.do(c, fmt.Sprintf("LeaseGrant %x", id), func(ctx context.Context) (any, error) {
				return lc.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: id, TTL: 60})
			})
		}
		put := func(c caller, key string, lease int64) (any, error) {
			return a.Put(c, &pb.PutRequest{Key: []byte(key), Value: []byte("v"), Lease: lease})
		}
		// Per caller: a lease on a key alice may write and read, one on a
		// key she may only write, one on a key she may not touch, and one
		// without keys.
		callers := []struct {
			name  string
			token func() string
		}{
			{"no-token", func() string { return "" }},
			{"malformed-token", func() string { return "not-a-token" }},
			{"unprivileged", func() string { return a.token("alice", "alicepw") }},
			{"root", func() string { return a.token("root", "rootpw") }},
		}
		for i := range callers {
			base := int64(0x100 * (i + 1))
			_, err = grant(root(), base+1)
			a.must(err)
			_, err = grant(root(), base+2)
			a.must(err)
			_, err = grant(root(), base+3)
			a.must(err)
			_, err = grant(root(), base+4)
			a.must(err)
			_, err = put(root(), fmt.Sprintf("a/%d", i), base+1)
			a.must(err)
			_, err = put(root(), fmt.Sprintf("w/%d", i), base+2)
			a.must(err)
			_, err = put(root(), fmt.Sprintf("k/%d", i), base+3)
			a.must(err)
		}

		for i, c := range callers {
			who := caller{name: c.name, token: c.token()}
			base := int64(0x100 * (i + 1))
			grant(who, base+9)
			for _, id := range []int64{base + 1, base + 2, base + 3, base + 4, 0xdead} {
				for _, keys := range []bool{false, true} {
					a.do(who, fmt.Sprintf("LeaseTimeToLive %x keys=%v", id, keys), func(ctx context.Context) (any, error) {
						r, err := lc.LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: id, Keys: keys})
						if err != nil {
							return nil, err
						}
						cp := *r
						if cp.TTL > 50 { // remaining time: timing, not semantics
							cp.TTL = 59
						}
						cp.Keys = slices.Clone(cp.Keys)
						slices.SortFunc(cp.Keys, bytes.Compare)
						return &cp, nil
					})
				}
				a.do(who, fmt.Sprintf("LeaseKeepAlive %x", id), func(ctx context.Context) (any, error) {
					stream, err := lc.LeaseKeepAlive(ctx)
					if err != nil {
						return nil, err
					}
					if err := stream.Send(&pb.LeaseKeepAliveRequest{ID: id}); err != nil {
						return nil, err
					}
					return stream.Recv()
				})
			}
			// Attaching a key to a lease needs WRITE on its other keys too.
			put(who, fmt.Sprintf("a/x%d", i), base+3)
			put(who, fmt.Sprintf("a/y%d", i), base+2)
			a.do(who, "LeaseLeases", func(ctx context.Context) (any, error) {
				r, err := lc.LeaseLeases(ctx, &pb.LeaseLeasesRequest{})
				if err != nil {
					return nil, err
				}
				return len(r.Leases), nil // the order of equal deadlines is not specified
			})
			for _, id := range []int64{base + 3, base + 2, base + 1, base + 4, 0xdead} {
				a.do(who, fmt.Sprintf("LeaseRevoke %x", id), func(ctx context.Context) (any, error) {
					return lc.LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: id})
				})
			}
		}
	})
}
