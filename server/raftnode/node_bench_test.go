package raftnode

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// nopSM applies nothing: the benchmark measures the node and its log.
type nopSM struct{}

func (nopSM) AppliedState() (uint64, raftpb.ConfState, error) { return 0, raftpb.ConfState{}, nil }
func (nopSM) Apply(ents []Entry) ([]any, error)               { return make([]any, len(ents)), nil }
func (nopSM) ApplyConfChange(_ ConfChange, confirm func() raftpb.ConfState) (any, error) {
	confirm()
	return nil, nil
}

// countingLog counts Readies saved and the fsyncs among them.
type countingLog struct {
	Log
	saves, syncs, entries atomic.Int64
}

func (l *countingLog) Save(hs raftpb.HardState, ents []raftpb.Entry, sync bool) error {
	l.saves.Add(1)
	if sync {
		l.syncs.Add(1)
	}
	l.entries.Add(int64(len(ents)))
	return l.Log.Save(hs, ents, sync)
}

// BenchmarkProposeOneMember measures a one-voter group on a real disk:
// proposals per second and how many proposals share each fsync, with one
// proposer and with 100 concurrent ones (etcd's put-1c / put-100c shapes).
//
// With truncate, one proposer in 4096 compacts the log up to 1024 entries
// behind the applied index (what issue 16's truncation will do): entries
// then mostly die in the memtable instead of being flushed and compacted.
func BenchmarkProposeOneMember(b *testing.B) {
	for _, bc := range []struct {
		par      int
		truncate bool
	}{{1, false}, {100, false}, {100, true}} {
		par := bc.par
		name := fmt.Sprintf("clients=%d", par)
		if bc.truncate {
			name += "/truncate"
		}
		b.Run(name, func(b *testing.B) {
			db, err := pebble.Open(b.TempDir(), &pebble.Options{Logger: quietPebble{}})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			ls, err := OpenLogStore(db, LogStoreOptions{})
			if err != nil {
				b.Fatal(err)
			}
			cl := &countingLog{Log: ls}
			cfg := testConfig()
			cfg.ID, cfg.Log, cfg.StateMachine = 1, cl, nopSM{}
			cfg.Peers, cfg.NewCluster = []Peer{{ID: 1, PeerURLs: []string{"http://127.0.0.1:1"}}}, true
			n, err := Start(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer n.Stop()
			for n.Leader() != 1 {
				time.Sleep(time.Millisecond)
			}
			data := make([]byte, 256)
			saves0, syncs0, ents0 := cl.saves.Load(), cl.syncs.Load(), cl.entries.Load()
			b.ResetTimer()
			var left, proposed atomic.Int64
			left.Store(int64(b.N))
			var wg sync.WaitGroup
			for range par {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for left.Add(-1) >= 0 {
						if _, err := n.Propose(context.Background(), data); err != nil {
							b.Error(err)
							return
						}
						if bc.truncate && proposed.Add(1)%4096 == 0 {
							if a := n.AppliedIndex(); a > 1024 {
								if err := ls.Compact(a - 1024); err != nil && !errors.Is(err, raft.ErrCompacted) {
									b.Error(err)
									return
								}
							}
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			saves, syncs, ents := cl.saves.Load()-saves0, cl.syncs.Load()-syncs0, cl.entries.Load()-ents0
			if saves > 0 {
				b.ReportMetric(float64(syncs)/float64(saves), "fsyncs/ready")
			}
			if syncs > 0 {
				b.ReportMetric(float64(ents)/float64(syncs), "entries/fsync")
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "proposals/s")
		})
	}
}

// BenchmarkGroupCommitBaseline is the shape of today's single-node apply
// loop on the same disk, for comparison: a goroutine takes every waiting
// request, writes them in one Pebble batch, commits it with one fsync and
// answers each caller.
func BenchmarkGroupCommitBaseline(b *testing.B) {
	for _, par := range []int{1, 100} {
		b.Run(map[int]string{1: "clients=1", 100: "clients=100"}[par], func(b *testing.B) {
			db, err := pebble.Open(b.TempDir(), &pebble.Options{Logger: quietPebble{}})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			type req struct {
				data []byte
				done chan error
			}
			queue := make(chan req, 4096)
			stop := make(chan struct{})
			var loop sync.WaitGroup
			loop.Add(1)
			var seq, commits uint64
			go func() {
				defer loop.Done()
				var batch []req
				for {
					select {
					case r := <-queue:
						batch = append(batch[:0], r)
					case <-stop:
						return
					}
				fill:
					for len(batch) < 1024 {
						select {
						case r := <-queue:
							batch = append(batch, r)
						default:
							break fill
						}
					}
					pb := db.NewBatch()
					for _, r := range batch {
						seq++
						pb.Set(binary.BigEndian.AppendUint64([]byte{'k'}, seq), r.data, nil)
					}
					err := pb.Commit(pebble.Sync)
					pb.Close()
					commits++
					for _, r := range batch {
						r.done <- err
					}
				}
			}()
			data := make([]byte, 256)
			b.ResetTimer()
			var left atomic.Int64
			left.Store(int64(b.N))
			var wg sync.WaitGroup
			for range par {
				wg.Add(1)
				go func() {
					defer wg.Done()
					done := make(chan error, 1)
					for left.Add(-1) >= 0 {
						queue <- req{data: data, done: done}
						if err := <-done; err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			close(stop)
			loop.Wait()
			b.ReportMetric(float64(seq)/float64(commits), "entries/fsync")
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "proposals/s")
		})
	}
}
