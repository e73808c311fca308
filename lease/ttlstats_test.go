package lease

import "testing"

func TestTTLStatsBuckets(t *testing.T) {
	var s ttlStats
	for _, ttl := range []int64{0, 1, 2, 3, 4, 5, 60, 1 << 23, 1<<23 + 1, 1 << 40} {
		s.observe(ttl)
	}
	h := s.read()
	if h.Count != 10 {
		t.Fatalf("count %d, want 10", h.Count)
	}
	if want := uint64(0 + 1 + 2 + 3 + 4 + 5 + 60 + 1<<23 + 1<<23 + 1 + 1<<40); h.Sum != want {
		t.Fatalf("sum %d, want %d", h.Sum, want)
	}
	// upper bound 2^i: how many TTLs are at most it.
	want := map[int]uint64{0: 2, 1: 3, 2: 5, 3: 6, 5: 6, 6: 7, 22: 7, 23: 8}
	for i, n := range want {
		if h.Cumulative[i] != n {
			t.Errorf("bucket le %d: %d, want %d", uint64(1)<<i, h.Cumulative[i], n)
		}
	}
}
