package mvcc

import (
	"fmt"
	"testing"
)

// BenchmarkBatchPut is the apply side of a group commit: batches of 100
// single-put transactions (as 100 clients' requests), committed without
// fsync, over a store that already holds 100,000 keys in its tables. new
// writes keys never seen (a load); overwrite rewrites existing keys in a
// scattered order (the cluster benchmark's 90,000 keys).
func BenchmarkBatchPut(b *testing.B) {
	const preload, perBatch = 100_000, 100
	for _, mode := range []string{"new", "overwrite"} {
		b.Run(mode, func(b *testing.B) {
			s, err := Open(b.TempDir(), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			val := make([]byte, 256)
			for i := 0; i < preload; i += 1000 {
				bt, err := s.NewBatch()
				if err != nil {
					b.Fatal(err)
				}
				for j := i; j < i+1000; j++ {
					tx := bt.Txn()
					if _, _, err := tx.Put(fmt.Appendf(nil, "%08d", j), val, 0); err != nil {
						b.Fatal(err)
					}
					tx.End()
				}
				if err := bt.CommitUnsynced(); err != nil {
					b.Fatal(err)
				}
			}
			if err := s.DB().Flush(); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			var bt *Batch
			for i := 0; i < b.N; i++ {
				if i%perBatch == 0 {
					if bt != nil {
						if err := bt.CommitUnsynced(); err != nil {
							b.Fatal(err)
						}
					}
					if bt, err = s.NewBatch(); err != nil {
						b.Fatal(err)
					}
				}
				k := i + preload
				if mode == "overwrite" {
					k = int((uint64(i) * 2654435761) % preload)
				}
				tx := bt.Txn()
				if _, _, err := tx.Put(fmt.Appendf(nil, "%08d", k), val, 0); err != nil {
					b.Fatal(err)
				}
				tx.End()
			}
			if err := bt.CommitUnsynced(); err != nil {
				b.Fatal(err)
			}
		})
	}
}
