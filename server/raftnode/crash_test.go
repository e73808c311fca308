package raftnode

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// A crash at an arbitrary moment (the file system keeps only what was
// synced, plus a random part of the rest) loses no acknowledged write: the
// log is synced before an entry is applied, and the state machine's
// unsynced apply batches are replayed from it on restart.
func TestCrashLosesNoAcknowledgedWrite(t *testing.T) {
	for round := range 4 {
		t.Run(fmt.Sprint("round-", round), func(t *testing.T) {
			mem := vfs.NewCrashableMem()
			open := func(fs vfs.FS) (*pebble.DB, *Node, *kvSM) {
				db, err := pebble.Open("db", &pebble.Options{FS: fs, Logger: quietPebble{}})
				if err != nil {
					t.Fatal(err)
				}
				ls, err := OpenLogStore(db, LogStoreOptions{})
				if err != nil {
					t.Fatal(err)
				}
				sm, err := openKVSM(db)
				if err != nil {
					t.Fatal(err)
				}
				cfg := testConfig()
				cfg.ID, cfg.Log, cfg.StateMachine = 1, ls, sm
				cfg.Peers, cfg.NewCluster = []Peer{{ID: 1, PeerURLs: []string{"http://127.0.0.1:1"}}}, true
				n, err := Start(cfg)
				if err != nil {
					t.Fatal(err)
				}
				return db, n, sm
			}
			db, n, _ := open(mem)
			var mu sync.Mutex
			var acked []string
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ctx.Err() == nil; i++ {
						v := fmt.Sprintf("g%d-%d", g, i)
						if _, err := n.Propose(ctx, []byte(v)); err == nil {
							mu.Lock()
							acked = append(acked, v)
							mu.Unlock()
						}
					}
				}()
			}
			time.Sleep(time.Duration(50+rand.IntN(150)) * time.Millisecond)
			mu.Lock()
			durable := append([]string(nil), acked...)
			mu.Unlock()
			// The crash: what the disk holds at this instant.
			crashed := mem.CrashClone(vfs.CrashCloneCfg{
				UnsyncedDataPercent: []int{0, 10, 50, 90}[round],
				RNG:                 rand.New(rand.NewPCG(uint64(round), 7)),
			})
			cancel()
			wg.Wait()
			if err := n.Stop(); err != nil {
				t.Fatal(err)
			}
			db.Close()
			if len(durable) < 5 {
				t.Fatalf("only %d writes acknowledged before the crash", len(durable))
			}

			db, n, sm := open(crashed)
			defer db.Close()
			defer n.Stop()
			waitFor(t, 5*time.Second, "a leader after the crash", func() bool { return n.Leader() == 1 })
			if _, err := n.ReadIndex(context.Background()); err != nil {
				t.Fatal(err)
			}
			have := map[string]bool{}
			for _, v := range sm.snapshotData() {
				have[v] = true
			}
			for _, v := range durable {
				if !have[v] {
					t.Fatalf("acknowledged write %q lost in the crash (%d of %d acknowledged writes present)", v, len(have), len(durable))
				}
			}
			t.Logf("%d acknowledged before the crash, %d applied after restart", len(durable), len(have))
		})
	}
}
