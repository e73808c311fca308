package compat

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/tests/framework"
)

// TestAuthDifferential runs a seeded random mix of permission changes (by
// root) and KV requests (by a user whose roles change) against etcd and
// metastore with auth enabled; every answer must be the same.
// METASTORE_AUTH_DIFF_SEEDS=a,b,... runs those seeds instead.
func TestAuthDifferential(t *testing.T) {
	seeds := []uint64{11, 12}
	if v := os.Getenv("METASTORE_AUTH_DIFF_SEEDS"); v != "" {
		seeds = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.ParseUint(f, 10, 64)
			if err != nil {
				t.Fatalf("METASTORE_AUTH_DIFF_SEEDS: %v", err)
			}
			seeds = append(seeds, n)
		}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			scenario(t, framework.Options{}, func(e *env) {
				runAuthDifferential(newAuthEnv(e), seed, 250)
			})
		})
	}
}

// A small key space so that grants and requests overlap often.
var authDiffKeys = []string{"a", "a/", "a/1", "a/2", "a0", "ab", "b", "b/1", "c", "\x00", "\xff"}

type authDiffGen struct{ r *rand.Rand }

func (g *authDiffGen) key() string { return authDiffKeys[g.r.IntN(len(authDiffKeys))] }

// rangeEnd picks a request or permission range end: none, from-key, the
// key's prefix end, or another key (which may be below the key).
func (g *authDiffGen) rangeEnd(key string) string {
	switch g.r.IntN(4) {
	case 0:
		return ""
	case 1:
		return "\x00"
	case 2:
		return prefixEnd(key)
	}
	return g.key()
}

func (g *authDiffGen) rangeReq() *pb.RangeRequest {
	k := g.key()
	return &pb.RangeRequest{Key: []byte(k), RangeEnd: []byte(g.rangeEnd(k)), CountOnly: g.r.IntN(2) == 0}
}

func (g *authDiffGen) op() *pb.RequestOp {
	k := g.key()
	switch g.r.IntN(3) {
	case 0:
		return opRange(g.rangeReq())
	case 1:
		return opPutReq(&pb.PutRequest{Key: []byte(k), Value: []byte("v"), PrevKv: g.r.IntN(3) == 0})
	}
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{
		Key: []byte(k), RangeEnd: []byte(g.rangeEnd(k)), PrevKv: g.r.IntN(3) == 0}}}
}

func runAuthDifferential(a *authEnv, seed uint64, n int) {
	g := &authDiffGen{r: rand.New(rand.NewPCG(seed, seed*7919))}
	root := a.setupRootAndEnable()
	_, err := a.UserAdd(root, &pb.AuthUserAddRequest{Name: "alice", Password: "alicepw"})
	a.must(err)
	for _, r := range []string{"r1", "r2"} {
		_, err = a.RoleAdd(root, r)
		a.must(err)
		_, err = a.UserGrantRole(root, "alice", r)
		a.must(err)
	}
	alice := a.as("alice", "alicepw")
	types := []authpb.Permission_Type{authpb.READ, authpb.WRITE, authpb.READWRITE}
	for i := 0; i < n; i++ {
		role := []string{"r1", "r2"}[g.r.IntN(2)]
		switch x := g.r.IntN(20); {
		case x < 4:
			k := g.key()
			a.RoleGrant(root, role, types[g.r.IntN(3)], k, g.rangeEnd(k))
		case x < 6:
			k := g.key()
			a.RoleRevoke(root, role, k, g.rangeEnd(k))
		case x == 6:
			a.UserRevokeRole(root, "alice", role)
		case x == 7:
			a.UserGrantRole(root, "alice", role)
		case x == 8:
			a.RoleGet(alice, role)
		case x < 12:
			a.Range(alice, g.rangeReq())
		case x < 14:
			k := g.key()
			a.Put(alice, &pb.PutRequest{Key: []byte(k), Value: []byte(fmt.Sprint(i)), PrevKv: g.r.IntN(3) == 0})
		case x < 16:
			k := g.key()
			a.Delete(alice, &pb.DeleteRangeRequest{Key: []byte(k), RangeEnd: []byte(g.rangeEnd(k)), PrevKv: g.r.IntN(3) == 0})
		default:
			rt := &pb.TxnRequest{}
			for j := g.r.IntN(3); j > 0; j-- {
				rt.Compare = append(rt.Compare, cmpVersion(g.key(), pb.Compare_GREATER, 0))
			}
			for j := g.r.IntN(3); j > 0; j-- {
				rt.Success = append(rt.Success, g.op())
			}
			for j := g.r.IntN(3); j > 0; j-- {
				rt.Failure = append(rt.Failure, g.op())
			}
			a.do(alice, fmt.Sprintf("Txn(%v)", rt), func(ctx context.Context) (any, error) { return a.kv.Txn(ctx, rt) })
		}
	}
	a.RoleGet(root, "r1")
	a.RoleGet(root, "r2")
	a.AuthStatus(root)
}
