package mvcc

import (
	"fmt"
	"syscall"
	"testing"
	"time"
)

// BenchmarkBatchPut is the apply side of a group commit: batches of 100
// single-put transactions (as 100 clients' requests, without prev_kv),
// committed without fsync, over a store that already holds 100,000 keys in its tables. new
// writes keys never seen (a load); overwrite rewrites existing keys in a
// scattered order (the cluster benchmark's 90,000 keys); scattered writes
// new keys that fall between the stored ones (etcd's txn-put over a loaded
// store), so every level's tables cover them. cpu-ns/op is the process's
// CPU (Pebble's flushes and compactions included).
func BenchmarkBatchPut(b *testing.B) {
	const preload, perBatch = 100_000, 100
	for _, mode := range []string{"new", "overwrite", "scattered"} {
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
			cpu0 := processCPU(b)
			b.ResetTimer()
			defer func() { b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op") }()
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
				key := fmt.Appendf(nil, "%08d", i+preload)
				switch mode {
				case "overwrite":
					key = fmt.Appendf(key[:0], "%08d", (uint64(i)*2654435761)%preload)
				case "scattered":
					key = fmt.Appendf(key[:0], "%08d-%d", (uint64(i)*2654435761)%preload, i)
				}
				tx := bt.Txn()
				if _, _, err := tx.PutPrev(key, val, 0, false); err != nil {
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

// processCPU is the CPU time the process used so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
