package auth

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"

	"go.etcd.io/etcd/api/v3/authpb"

	"github.com/metastore-dev/metastore/internal/policyabi"
)

// The model below is etcd's permission check written out plainly: its
// "bytes affine" order (the empty slice is +infinity), its interval overlap
// rule and the contiguity walk of its interval tree's Contains. The
// precomputed interval sets must agree with it on every request.

func affineCmp(a, b []byte) int {
	switch {
	case len(a) == 0 && len(b) == 0:
		return 0
	case len(a) == 0:
		return 1
	case len(b) == 0:
		return -1
	}
	return bytes.Compare(a, b)
}

type modelIvl struct{ begin, end []byte }

// overlap is etcd's Interval.Compare: 0 when q overlaps n.
func overlap(q, n modelIvl) int {
	if affineCmp(q.begin, n.begin) < 0 && affineCmp(q.end, n.begin) <= 0 {
		return -1
	}
	if affineCmp(q.begin, n.end) >= 0 {
		return 1
	}
	return 0
}

func modelPerm(p *authpb.Permission) modelIvl {
	switch {
	case len(p.RangeEnd) == 0:
		return modelIvl{p.Key, append(bytes.Clone(p.Key), 0)}
	case isOpenEnded(p.RangeEnd):
		return modelIvl{p.Key, nil}
	}
	return modelIvl{p.Key, p.RangeEnd}
}

func modelAllows(perms []*authpb.Permission, want Perm, key, end []byte) bool {
	var tree []modelIvl
	for _, p := range perms {
		if p.PermType == authpb.READWRITE || (want == policyabi.PermRead && p.PermType == authpb.READ) || (want == policyabi.PermWrite && p.PermType == authpb.WRITE) {
			tree = append(tree, modelPerm(p))
		}
	}
	sort.SliceStable(tree, func(i, j int) bool { return affineCmp(tree[i].begin, tree[j].begin) < 0 })
	if len(end) == 0 {
		q := modelIvl{key, append(bytes.Clone(key), 0)}
		for _, n := range tree {
			if overlap(q, n) == 0 {
				return true
			}
		}
		return false
	}
	if isOpenEnded(end) {
		end = nil
	}
	q := modelIvl{key, end}
	var minBegin, maxEnd []byte
	seen := false
	for _, n := range tree {
		if overlap(q, n) != 0 {
			continue
		}
		if !seen {
			minBegin, maxEnd, seen = n.begin, n.end, true
			continue
		}
		if affineCmp(maxEnd, n.begin) < 0 {
			return false
		}
		if affineCmp(n.end, maxEnd) > 0 {
			maxEnd = n.end
		}
	}
	return seen && affineCmp(maxEnd, q.end) >= 0 && affineCmp(minBegin, q.begin) <= 0
}

var alphabet = [][]byte{{}, {0}, []byte("a"), []byte("a\x00"), []byte("ab"), []byte("b"), []byte("ba"), []byte("c"), {0xff}}

func randKey(r *rand.Rand, nonEmpty bool) []byte {
	for {
		k := alphabet[r.IntN(len(alphabet))]
		if r.IntN(3) == 0 {
			k = append(bytes.Clone(k), alphabet[r.IntN(len(alphabet))]...)
		}
		if !nonEmpty || len(k) > 0 {
			return k
		}
	}
}

func TestPermSetMatchesEtcdModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	types := []authpb.Permission_Type{authpb.READ, authpb.WRITE, authpb.READWRITE}
	for iter := 0; iter < 3000; iter++ {
		var perms []*authpb.Permission
		for n := r.IntN(6); len(perms) < n; {
			p := &authpb.Permission{PermType: types[r.IntN(3)], Key: randKey(r, true)}
			switch r.IntN(3) {
			case 1:
				p.RangeEnd = []byte{0}
			case 2:
				p.RangeEnd = randKey(r, true)
			}
			if validPermissionRange(p.Key, p.RangeEnd) {
				perms = append(perms, p)
			}
		}
		ps := newPermSet([]*role{{name: "r", perms: perms}})
		for q := 0; q < 50; q++ {
			key := randKey(r, false)
			var end []byte
			switch r.IntN(3) {
			case 1:
				end = []byte{0}
			case 2:
				end = randKey(r, false)
			}
			inverted := len(end) > 0 && !isOpenEnded(end) && bytes.Compare(end, key) < 0
			for _, want := range []Perm{policyabi.PermRead, policyabi.PermWrite} {
				exp := modelAllows(perms, want, key, end)
				if inverted {
					// The flat model does not prune as etcd's tree does;
					// the compat differential test checks these on etcd.
					continue
				}
				if got := ps.allows(want, key, end); got != exp {
					t.Fatalf("perms %v: allows(%d, %q, %q) = %v, etcd's model says %v", fmtPerms(perms), want, key, end, got, exp)
				}
				// On well-formed ranges etcd's tree walk is exact, so the
				// tree must agree with the model too.
				if len(end) > 0 && len(key) > 0 {
					tree := ps.readTree
					if want == policyabi.PermWrite {
						tree = ps.writeTree
					}
					qe := end
					if isOpenEnded(end) {
						qe = nil
					}
					if got := tree.contains(key, qe); got != exp {
						t.Fatalf("perms %v: tree.contains(%d, %q, %q) = %v, etcd's model says %v", fmtPerms(perms), want, key, end, got, exp)
					}
				}
			}
		}
	}
}

func fmtPerms(ps []*authpb.Permission) string {
	s := ""
	for _, p := range ps {
		s += fmt.Sprintf("[%s %q %q]", p.PermType, p.Key, p.RangeEnd)
	}
	return s
}

func TestPermSetCases(t *testing.T) {
	perms := []*authpb.Permission{
		{PermType: authpb.READ, Key: []byte("k1")},
		{PermType: authpb.READWRITE, Key: []byte("p/"), RangeEnd: []byte("p0")},
		{PermType: authpb.READ, Key: []byte("p0"), RangeEnd: []byte("q")}, // touches p/..p0
		{PermType: authpb.WRITE, Key: []byte("z"), RangeEnd: []byte{0}},
	}
	ps := newPermSet([]*role{{perms: perms}})
	for _, c := range []struct {
		perm     Perm
		key, end string
		want     bool
	}{
		{policyabi.PermRead, "k1", "", true},
		{policyabi.PermRead, "k1\x00", "", false},
		{policyabi.PermRead, "k1", "k1\x00", true},
		{policyabi.PermRead, "k1", "k2", false},
		{policyabi.PermWrite, "k1", "", false},
		{policyabi.PermRead, "p/a", "", true},
		{policyabi.PermRead, "p/", "q", true}, // across two touching grants
		{policyabi.PermWrite, "p/", "q", false},
		{policyabi.PermRead, "p/", "q\x00", false},
		{policyabi.PermWrite, "z", "\x00", true},
		{policyabi.PermWrite, "zz", "\x00", true},
		{policyabi.PermWrite, "y", "\x00", false},
		{policyabi.PermRead, "", "", false},
		{policyabi.PermRead, "b", "a", false},
	} {
		if got := ps.allows(c.perm, []byte(c.key), []byte(c.end)); got != c.want {
			t.Errorf("allows(%d, %q, %q) = %v, want %v", c.perm, c.key, c.end, got, c.want)
		}
	}
}

// TestAuthorizeAllocs proves the permission check allocates nothing.
func TestAuthorizeAllocs(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	var r Request
	r.Reset(policyabi.OpRange, "alice")
	r.Add(policyabi.PermRead, []byte("a/x"), nil)
	r.Add(policyabi.PermWrite, []byte("a/"), []byte("a0"))
	if d, err := s.Authorize(ctx, &r); d != Allow {
		t.Fatalf("Authorize = %v, %v", d, err)
	}
	if n := testing.AllocsPerRun(1000, func() { s.Authorize(ctx, &r) }); n != 0 {
		t.Errorf("Authorize allocates %v times per call, want 0", n)
	}
	var denied Request
	denied.Reset(policyabi.OpPut, "alice")
	denied.Add(policyabi.PermRead, []byte("a/z"), []byte("a/a")) // inverted: decided by the tree walk
	denied.Add(policyabi.PermWrite, []byte("b"), nil)
	if n := testing.AllocsPerRun(1000, func() { s.Authorize(ctx, &denied) }); n != 0 {
		t.Errorf("a denied Authorize allocates %v times per call, want 0", n)
	}
}

func BenchmarkAuthorize(b *testing.B) {
	s := newTestStore(b)
	ctx := context.Background()
	var r Request
	r.Reset(policyabi.OpRange, "alice")
	r.Add(policyabi.PermRead, []byte("a/some/key"), nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s.Authorize(ctx, &r)
		}
	})
}
