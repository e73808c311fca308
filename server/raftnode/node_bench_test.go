package raftnode

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
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
func BenchmarkProposeOneMember(b *testing.B) {
	for _, par := range []int{1, 100} {
		b.Run(map[int]string{1: "clients=1", 100: "clients=100"}[par], func(b *testing.B) {
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
			b.SetParallelism(par) // × GOMAXPROCS goroutines
			b.ResetTimer()
			if par == 1 {
				for range b.N {
					if _, err := n.Propose(context.Background(), data); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := n.Propose(context.Background(), data); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
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
