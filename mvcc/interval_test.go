package mvcc

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestIntervalTreeRandom checks stabbing, Get and Delete against a brute
// force list under random inserts and deletes.
func TestIntervalTreeRandom(t *testing.T) {
	type iv struct {
		start, end string
		inf        bool
	}
	rng := rand.New(rand.NewPCG(1, 2))
	key := func() string { return string(rune('a' + rng.IntN(12))) }
	var tree intervalTree[int]
	ref := map[iv]int{}
	for step := range 20000 {
		s := key()
		e := key()
		inf := rng.IntN(5) == 0
		if inf {
			e = ""
		} else if e <= s {
			e = s + "\x00"
		}
		k := iv{s, e, inf}
		switch rng.IntN(3) {
		case 0, 1:
			tree.Insert(s, e, inf, step)
			ref[k] = step
		case 2:
			_, had := ref[k]
			if got := tree.Delete(s, e, inf); got != had {
				t.Fatalf("step %d: Delete(%v) = %v, want %v", step, k, got, had)
			}
			delete(ref, k)
		}
		if tree.Len() != len(ref) {
			t.Fatalf("step %d: Len = %d, want %d", step, tree.Len(), len(ref))
		}
		p := key()
		if rng.IntN(2) == 0 {
			p += "\x00"
		}
		var want []int
		for k, v := range ref {
			if k.start <= p && (k.inf || p < k.end) {
				want = append(want, v)
			}
		}
		var got []int
		tree.Stab([]byte(p), func(v int) { got = append(got, v) })
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("step %d: Stab(%q) = %v, want %v", step, p, got, want)
		}
		if tree.Intersects([]byte(p)) != (len(want) > 0) {
			t.Fatalf("step %d: Intersects(%q) = %v, want %v", step, p, !(len(want) > 0), len(want) > 0)
		}
		v, ok := tree.Get(s, e, inf)
		if w, in := ref[k]; ok != in || (ok && v != w) {
			t.Fatalf("step %d: Get(%v) = %d, %v; want %d, %v", step, k, v, ok, w, in)
		}
	}
}
