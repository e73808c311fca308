package compat

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/status"

	"github.com/metastore-dev/metastore/tests/framework"
)

// TestAuthJWTSurvivesUnrelatedChanges shows where metastore deliberately
// differs from etcd (etcd-io/etcd#13976): etcd voids every JWT at any auth
// change (ErrAuthOldRevision), metastore checks the token against current
// state, so only changes to the token's own user (password, deletion) or
// disabling auth void it. Both servers are asserted.
func TestAuthJWTSurvivesUnrelatedChanges(t *testing.T) {
	pub, priv := writeECKeys(t, t.TempDir())
	o := framework.Options{AuthToken: "jwt,pub-key=" + pub + ",priv-key=" + priv + ",sign-method=ES256,ttl=5m"}
	for _, b := range framework.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			a := newAuthEnv(newEnv(t, b.Name, b.Start(t, o)))
			a.setupRootAndEnable()
			root := func() caller { return a.as("root", "rootpw") }
			_, err := a.UserAdd(root(), &pb.AuthUserAddRequest{Name: "alice", Password: "alicepw"})
			a.must(err)
			_, err = a.RoleAdd(root(), "ra")
			a.must(err)
			_, err = a.RoleGrant(root(), "ra", authpb.READWRITE, "a/", "a0")
			a.must(err)
			_, err = a.UserGrantRole(root(), "alice", "ra")
			a.must(err)
			alice := a.as("alice", "alicepw")
			_, err = a.Put(alice, &pb.PutRequest{Key: []byte("a/1"), Value: []byte("v")})
			a.must(err)

			// An unrelated change: another user is added.
			_, err = a.UserAdd(root(), &pb.AuthUserAddRequest{Name: "bob", Password: "bobpw"})
			a.must(err)
			_, err = a.Put(alice, &pb.PutRequest{Key: []byte("a/1"), Value: []byte("v")})
			if b.Name == "etcd" {
				a.wantErr(err, rpctypes.ErrGRPCAuthOldRevision)
			} else if err != nil {
				t.Errorf("metastore: alice's JWT was voided by an unrelated change: %v", err)
			}

			// A change to alice herself voids it on both.
			alice = a.as("alice", "alicepw")
			_, err = a.UserChangePassword(root(), "alice", "alicepw2")
			a.must(err)
			_, err = a.Put(alice, &pb.PutRequest{Key: []byte("a/1"), Value: []byte("v")})
			a.wantErr(err, rpctypes.ErrGRPCAuthOldRevision)
		})
	}
}

// TestAuthConcurrentChanges writes and reads as a user while root keeps
// revoking and granting that user's role. Every answer must be a success
// or etcd's permission denied (never a stale-revision error, which
// metastore resolves internally), and after the last revocation nothing
// more may succeed.
func TestAuthConcurrentChanges(t *testing.T) {
	t.Parallel()
	srv := framework.MetastoreBackend.Start(t, framework.Options{})
	a := newAuthEnv(newEnv(t, "metastore", srv))
	root := a.setupRootAndEnable()
	_, err := a.UserAdd(root, &pb.AuthUserAddRequest{Name: "alice", Password: "alicepw"})
	a.must(err)
	_, err = a.RoleAdd(root, "ra")
	a.must(err)
	_, err = a.RoleGrant(root, "ra", authpb.READWRITE, "a/", "a0")
	a.must(err)
	alice := a.as("alice", "alicepw")

	var stop atomic.Bool
	var wg sync.WaitGroup
	var okCount, denied atomic.Int64
	errc := make(chan error, 16)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := withToken(context.Background(), alice.token)
			for i := 0; !stop.Load(); i++ {
				var err error
				key := []byte(fmt.Sprintf("a/%d/%d", w, i))
				switch i % 3 {
				case 0:
					_, err = a.kv.Put(ctx, &pb.PutRequest{Key: key, Value: []byte("v")})
				case 1:
					_, err = a.kv.Range(ctx, &pb.RangeRequest{Key: []byte("a/"), RangeEnd: []byte("a0"), CountOnly: true})
				case 2:
					_, err = a.kv.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{opPut(string(key), "t")}})
				}
				switch {
				case err == nil:
					okCount.Add(1)
				case status.Convert(err).Message() == status.Convert(rpctypes.ErrGRPCPermissionDenied).Message():
					denied.Add(1)
				default:
					errc <- err
					return
				}
			}
		}()
	}
	ctx := withToken(context.Background(), root.token)
	for i := 0; i < 60; i++ {
		var err error
		if i%2 == 0 {
			_, err = a.auth.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: "alice", Role: "ra"})
		} else {
			_, err = a.auth.UserRevokeRole(ctx, &pb.AuthUserRevokeRoleRequest{Name: "alice", Role: "ra"})
		}
		if err != nil {
			t.Fatalf("toggle %d: %v", i, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The role is revoked now: no later request may pass.
	for w := 0; w < 20; w++ {
		_, err := a.kv.Put(withToken(context.Background(), alice.token), &pb.PutRequest{Key: []byte("a/after"), Value: []byte("v")})
		if !errors.Is(err, rpctypes.ErrGRPCPermissionDenied) && status.Convert(err).Message() != "etcdserver: permission denied" {
			t.Fatalf("put after the final revoke: %v", err)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Errorf("unexpected error: %v", err)
	}
	if okCount.Load() == 0 || denied.Load() == 0 {
		t.Errorf("ok=%d denied=%d: the toggling was not exercised", okCount.Load(), denied.Load())
	}
	t.Logf("ok=%d denied=%d", okCount.Load(), denied.Load())
}
