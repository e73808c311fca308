package lease

import (
	"math/bits"
	"sync/atomic"
)

// TTLBuckets is the number of TTL buckets: upper bounds of 1 second
// doubling to 2^23 seconds (about three months), etcd's buckets for
// etcd_debugging_lease_ttl_total.
const TTLBuckets = 24

// TTLHistogram is a read of the granted TTLs.
type TTLHistogram struct {
	// Cumulative[i] counts the grants with a TTL of at most 2^i seconds.
	Cumulative [TTLBuckets]uint64
	// Count and Sum are all grants and their TTLs' sum in seconds.
	Count, Sum uint64
}

// ttlStats counts granted TTLs per bucket; a grant is a few atomic adds.
type ttlStats struct {
	buckets    [TTLBuckets]atomic.Uint64 // not cumulative
	count, sum atomic.Uint64
}

func (t *ttlStats) observe(ttl int64) {
	ttl = max(ttl, 0)
	// The smallest i with ttl <= 2^i.
	if i := bits.Len64(uint64(max(ttl, 1) - 1)); i < TTLBuckets {
		t.buckets[i].Add(1)
	}
	t.sum.Add(uint64(ttl))
	t.count.Add(1)
}

func (t *ttlStats) read() TTLHistogram {
	var h TTLHistogram
	h.Count = t.count.Load() // first: the buckets never exceed it
	h.Sum = t.sum.Load()
	var c uint64
	for i := range t.buckets {
		c += t.buckets[i].Load()
		h.Cumulative[i] = min(c, h.Count)
	}
	return h
}
