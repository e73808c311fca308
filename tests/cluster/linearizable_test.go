package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/tests/reliability"
)

// linWatchers are the recorded watchers: two streams, every key and part
// of them, with and without prev_kv and progress_notify (as in
// tests/reliability: a watcher on part of the keys needs progress_notify to
// learn that it reached the end).
var linWatchers = [][]reliability.WatchSpec{
	{
		{Name: "all+prev", Key: reliability.KeyPrefix, End: reliability.KeyPrefixEnd, PrevKV: true},
		{Name: "key0+notify", Key: reliability.KeyName(0), ProgressNotify: true},
	},
	{
		{Name: "keys1-2+prev+notify", Key: reliability.KeyName(1), End: reliability.KeyName(3), PrevKV: true, ProgressNotify: true},
		{Name: "all", Key: reliability.KeyPrefix, End: reliability.KeyPrefixEnd},
	},
}

// TestLinearizableLeaderKills runs tests/reliability's workload (puts,
// gets, ranges, deletes, compare-and-swap and two-key txns, lease grants,
// revokes, lease puts, keep-alives, TimeToLive) through clients that know
// every member, and SIGKILLs the leader at the end of each segment while
// calls are in flight, restarting it before the next. Each segment's
// history must be linearizable (porcupine, tests/reliability's model), the
// watchers (streams on whatever member the client picked, resumed on
// another after a kill) must see exactly the committed history, and every
// acknowledged write and lease must be there at the end.
// METASTORE_CLUSTER_LIN_SEGMENTS sets the segments (3; 40 with
// METASTORE_SOAK).
func TestLinearizableLeaderKills(t *testing.T) {
	segments := 3
	if soak() {
		segments = 40
	}
	segments = envInt(t, "METASTORE_CLUSTER_LIN_SEGMENTS", segments)
	for _, kind := range Kinds() {
		t.Run(kind, func(t *testing.T) { testLinearizableLeaderKills(t, kind, segments) })
	}
}

func testLinearizableLeaderKills(t *testing.T, kind string, segments int) {
	// With truncation on, restarts start from a truncated log; snapshots
	// are rare here (the kills fall between segments, when every client
	// is parked, so a killed leader misses few entries): the counter is
	// logged, not required.
	sc, cu := truncation(t)
	c := Start(t, Config{Kind: kind, SnapshotCount: sc, CatchUpEntries: cu, Extra: []string{"--watch-progress-notify-interval=200ms"}})
	var snaps snapTally
	var clients []reliability.Conn
	for i := 0; i < 6; i++ {
		clients = append(clients, reliability.NewConn(c.Client(t).ActiveConnection()))
	}
	control := reliability.NewConn(c.Client(t).ActiveConnection())
	var wcs []pb.WatchClient
	for range linWatchers {
		wcs = append(wcs, pb.NewWatchClient(c.Client(t).ActiveConnection()))
	}
	var killed *Member
	var termBefore uint64
	kills, changes := 0, 0
	res, err := reliability.Run(reliability.RunOptions{
		Clients: clients, Control: control, Segments: segments, SegmentTime: 600 * time.Millisecond, Seed: 3,
		Watchers: linWatchers, WatchClients: wcs,
		CallTimeout: 3 * time.Second,
		Interrupt: func(int) error {
			l, err := c.WaitLeader(30 * time.Second)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			st, err := l.Status(ctx)
			if err != nil {
				return err
			}
			killed, termBefore = l, st.RaftTerm
			if sc > 0 {
				if err := snaps.beforeKill(l); err != nil {
					return err
				}
			}
			l.Kill()
			kills++
			return nil
		},
		Resume: func(int) error {
			killed.Restart()
			if err := c.WaitHealthy(60 * time.Second); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			st, err := killed.Status(ctx)
			if err != nil {
				return err
			}
			// The kill must have made a new leader, in a newer term.
			if st.RaftTerm <= termBefore {
				return fmt.Errorf("raft term %d after killing the leader of term %d", st.RaftTerm, termBefore)
			}
			changes++
			return nil
		},
		AfterSegment: func(segs []reliability.Segment) error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			return reliability.VerifyAcked(ctx, control.KV, reliability.AckedWrites(segs[len(segs)-1].Ops))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ops := 0
	for _, seg := range res.Segments {
		seg.Name = kind + "-cluster-" + seg.Name
		cr, err := reliability.Check(seg, 2*time.Minute)
		if err != nil {
			t.Fatalf("%s: %v", seg.Name, err)
		}
		ops += len(seg.Ops)
		switch cr.Result {
		case porcupine.Ok:
		case porcupine.Illegal:
			t.Fatalf("%s: history is not linearizable (%d operations); porcupine's visualisation: %s", seg.Name, len(seg.Ops), cr.Visualization)
		default:
			t.Fatalf("%s: porcupine could not decide (%d operations); visualisation: %s", seg.Name, len(seg.Ops), cr.Visualization)
		}
	}
	if res.Committed == nil {
		t.Fatal("no watch recordings")
	}
	for _, v := range reliability.CheckWatches(res.Committed, res.Watches, res.WatchThrough) {
		t.Errorf("watch guarantee violated: %s", v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lc, err := reliability.VerifyLeases(ctx, control, res.Segments, 0)
	if err != nil {
		t.Fatal(err)
	}
	if changes != kills {
		t.Fatalf("%d leader changes for %d kills", changes, kills)
	}
	c.CheckRaces(t)
	if sc > 0 {
		n, err := snaps.total(c)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("--snapshot-count %d, --snapshot-catchup-entries %d: %v snapshots received by restarted members over %d kills", sc, cu, n, kills)
	}
	events := 0
	for _, w := range res.Watches {
		for _, r := range w.Records {
			events += len(r.Events)
		}
	}
	t.Logf("%s: %d leader kills; %d segments, %d operations linearizable (%d calls with unknown outcome); %d watchers on %d streams (%d opened) saw %d events, %d progress notifications, matching %d committed revisions; %d acknowledged grants alive, %d revokes gone",
		kind, kills, len(res.Segments), ops, res.Unknown, len(res.Watches), len(linWatchers), res.WatchStreams, events, res.Progress, len(res.Committed.Revs), lc.Alive, lc.Revoked)
}
