package raftnode

import (
	"context"
	"crypto/rand"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
)

// TestMeasureLogBytes measures the log's disk use (Pebble's estimate of
// the 'R' span) while a member applies a long run of writes, with and
// without truncation. Set METASTORE_MEASURE_LOG=<entries> to run it; it
// fails if the truncated log grows past a bound that does not depend on
// the number of entries.
func TestMeasureLogBytes(t *testing.T) {
	total, _ := strconv.Atoi(os.Getenv("METASTORE_MEASURE_LOG"))
	if total == 0 {
		t.Skip("set METASTORE_MEASURE_LOG=<entries> to measure")
	}
	for _, count := range []uint64{0, 10000} {
		c := newCluster(t, 1)
		c.members[0].snapshotCount = count
		c.startAll()
		m := c.leader(t)
		var next atomic.Int64
		var peak uint64
		var wg sync.WaitGroup
		var mu sync.Mutex
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1)
					if i > int64(total) {
						return
					}
					payload := make([]byte, 256) // incompressible, as a real value mostly is
					rand.Read(payload)
					if _, err := m.node.Propose(context.Background(), payload); err != nil {
						t.Error(err)
						return
					}
					if i%(int64(total)/10) == 0 {
						b, _ := m.log.LogBytes()
						first, _ := m.log.FirstIndex()
						last, _ := m.log.LastIndex()
						mu.Lock()
						peak = max(peak, b)
						mu.Unlock()
						t.Logf("snapshot-count %d: %d entries applied, log [%d, %d], %.1f MiB on disk", count, i, first, last, float64(b)/(1<<20))
					}
				}
			}()
		}
		wg.Wait()
		m.stop()
		t.Logf("snapshot-count %d: peak %.1f MiB", count, float64(peak)/(1<<20))
		// 10000+5000 entries of ~280 bytes are ~4 MiB; Pebble keeps
		// deleted entries until a compaction drops them.
		if count > 0 && peak > 64<<20 {
			t.Errorf("the truncated log reached %.1f MiB", float64(peak)/(1<<20))
		}
	}
}
