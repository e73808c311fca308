package auth

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/internal/policyabi"
)

// TestHammerStore runs lock-free readers (permission checks, token
// resolution, listings) against a writer that keeps changing users, roles
// and permissions. Run under -race; the invariants catch torn states.
func TestHammerStore(t *testing.T) {
	b := newMemBackend()
	s := setupStore(t, b)
	tk := NewTokens(s, TokenOptions{})
	defer tk.Close()
	// carol's permissions never change; alice's flip all the time.
	must(s.UserAdd(b, &pb.AuthUserAddRequest{Name: "carol", HashedPassword: hashed(t, s, "x")}))
	must(s.RoleAdd(b, &pb.AuthRoleAddRequest{Name: "rc"}))
	must(s.RoleGrantPermission(b, &pb.AuthRoleGrantPermissionRequest{Name: "rc", Perm: &authpb.Permission{PermType: authpb.READWRITE, Key: []byte("c/"), RangeEnd: []byte("c0")}}))
	must(s.UserGrantRole(b, &pb.AuthUserGrantRoleRequest{User: "carol", Role: "rc"}))
	rootTok := issue(t, s, tk, "root")
	carolTok := issue(t, s, tk, "carol")

	P := runtime.GOMAXPROCS(0) * 2
	N := 2000
	if testing.Short() {
		N = 200
	}
	start := make(chan struct{})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errc := make(chan error, P+1)
	for p := 0; p < P; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			ctx := context.Background()
			var lastEpoch uint64
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if e := s.Epoch(); e < lastEpoch {
					errc <- fmt.Errorf("epoch went back: %d after %d", e, lastEpoch)
					return
				} else {
					lastEpoch = e
				}
				if err := decide(s, policyabi.OpPut, "carol", policyabi.PermWrite, "c/x", ""); err != nil {
					errc <- fmt.Errorf("carol lost a permission nobody touched: %v", err)
					return
				}
				if err := decide(s, policyabi.OpRange, "root", policyabi.PermRead, "anything", "\x00"); err != nil {
					errc <- fmt.Errorf("root denied: %v", err)
					return
				}
				if err := decide(s, policyabi.OpPut, "alice", policyabi.PermWrite, "a/x", ""); err != nil && !errors.Is(err, ErrPermissionDenied) {
					errc <- fmt.Errorf("alice: unexpected %v", err)
					return
				}
				for _, tok := range []string{rootTok, carolTok} {
					if _, err := tk.Resolve(tok); err != nil {
						errc <- fmt.Errorf("a token of an untouched user failed: %v", err)
						return
					}
				}
				if i%64 == 0 {
					var r Request
					r.Reset(policyabi.OpTxn, "alice")
					r.Add(policyabi.PermRead, []byte("a/"), []byte("a0"))
					r.Add(policyabi.PermWrite, []byte("b"), nil)
					s.Authorize(ctx, &r)
					s.UserList(nil)
					s.RoleGet(&pb.AuthRoleGetRequest{Role: "ra"})
					s.UserGet(&pb.AuthUserGetRequest{Name: "alice"})
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-start
		defer close(stop)
		for i := 0; i < N; i++ {
			var err error
			switch i % 6 {
			case 0:
				_, err = s.UserRevokeRole(b, &pb.AuthUserRevokeRoleRequest{Name: "alice", Role: "ra"})
			case 1:
				_, err = s.UserGrantRole(b, &pb.AuthUserGrantRoleRequest{User: "alice", Role: "ra"})
			case 2:
				_, err = s.RoleGrantPermission(b, &pb.AuthRoleGrantPermissionRequest{Name: "ra", Perm: &authpb.Permission{PermType: authpb.WRITE, Key: []byte(fmt.Sprintf("x%d", i))}})
			case 3:
				_, err = s.UserAdd(b, &pb.AuthUserAddRequest{Name: fmt.Sprintf("u%d", i), Options: &authpb.UserAddOptions{NoPassword: true}})
			case 4:
				_, err = s.UserDelete(b, &pb.AuthUserDeleteRequest{Name: fmt.Sprintf("u%d", i-1)})
			case 5:
				_, err = s.RoleRevokePermission(b, &pb.AuthRoleRevokePermissionRequest{Role: "ra", Key: []byte(fmt.Sprintf("x%d", i-3))})
			}
			if err != nil {
				errc <- fmt.Errorf("writer step %d: %v", i, err)
				return
			}
		}
	}()
	close(start)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}

// TestHammerTokens issues, resolves and expires simple tokens concurrently.
func TestHammerTokens(t *testing.T) {
	s := newTestStore(t)
	clk := newFakeClock()
	tk := NewTokens(s, TokenOptions{Now: clk.now, SweepInterval: 1})
	defer tk.Close()
	P := runtime.GOMAXPROCS(0) * 2
	var wg sync.WaitGroup
	start := make(chan struct{})
	for p := 0; p < P; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := 0; i < 300; i++ {
				tok := issue(t, s, tk, "alice")
				if _, err := tk.Resolve(tok); err != nil && !errors.Is(err, ErrInvalidAuthToken) {
					t.Errorf("Resolve: %v", err)
					return
				}
				if i%50 == 0 {
					clk.advance(ttlDefault())
				}
			}
		}()
	}
	close(start)
	wg.Wait()
}

func ttlDefault() time.Duration { return 301 * time.Second }
