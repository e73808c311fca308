package mvcc

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkReadOneKey is a serializable Get's read in the store: a view,
// one key of 256 B, on parallel goroutines as 100 clients' reads. fresh
// reads a store that holds only that key (in the memtable); written reads
// it after 180,000 other writes have pushed it into Pebble's tables (what
// make bench's range workloads read after its puts and txns). cpu-ns/op is
// the process's CPU.
func BenchmarkReadOneKey(b *testing.B) {
	for _, mode := range []string{"fresh", "written"} {
		b.Run(mode, func(b *testing.B) {
			s, err := Open(b.TempDir(), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			key := []byte("bench-range-key")
			putCommitted(b, s, string(key), string(make([]byte, 256)))
			if mode == "written" {
				val := make([]byte, 256)
				for i := 0; i < 180_000; i += 1000 {
					bt, err := s.NewBatch()
					if err != nil {
						b.Fatal(err)
					}
					for j := i; j < i+1000; j++ {
						tx := bt.Txn()
						// 90,000 keys written twice, as make bench's put and txn-put
						if _, _, err := tx.Put(fmt.Appendf(nil, "%08x", (j%90_000)*2654435761%(1<<32)), val, 0); err != nil {
							b.Fatal(err)
						}
						tx.End()
					}
					if err := bt.CommitUnsynced(); err != nil {
						b.Fatal(err)
					}
				}
			}
			ctx := context.Background()
			b.ReportAllocs()
			cpu0 := processCPU(b)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					tx, err := s.Read()
					if err != nil {
						b.Fatal(err)
					}
					rr, err := tx.Range(ctx, key, nil, RangeOptions{})
					tx.End()
					if err != nil || len(rr.KVs) != 1 {
						b.Fatal(rr, err)
					}
				}
			})
			b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}
