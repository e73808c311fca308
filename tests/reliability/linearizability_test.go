package reliability

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/tests/framework"
)

// checkTimeout bounds porcupine per segment; a segment it cannot decide in
// time fails the test (unproven is not passed).
const checkTimeout = 2 * time.Minute

// stubs returns n clients' stubs over n separate client connections, and
// one more for the controller.
func stubs(t *testing.T, endpoint string, n int) ([]Conn, Conn) {
	var cs []Conn
	for i := 0; i <= n; i++ {
		cs = append(cs, NewConn(framework.NewClient(t, endpoint).ActiveConnection()))
	}
	return cs[:n], cs[n]
}

// watchers are the recorded watchers of the runs: two streams, each with
// a watcher on every key of the workload and one on part of it, with and
// without prev_kv and progress_notify.
//
// NB: a stream answers RequestProgress only when none of its watchers
// waits for a future start revision (etcd and metastore alike), and a
// watcher resumed after a crash from the revision after the newest is in
// that state until the next write. So a watcher that may not see the last
// revision as an event (one on part of the keys) has progress_notify, to
// learn that it reached the end.
var watchers = [][]WatchSpec{
	{
		{Name: "all+prev", Key: KeyPrefix, End: KeyPrefixEnd, PrevKV: true},
		{Name: "key0+notify", Key: KeyName(0), ProgressNotify: true},
	},
	{
		{Name: "keys1-2+prev+notify", Key: KeyName(1), End: KeyName(3), PrevKV: true, ProgressNotify: true},
		{Name: "all", Key: KeyPrefix, End: KeyPrefixEnd},
		{Name: "key3+notify", Key: KeyName(3), ProgressNotify: true},
	},
}

// progressNotifyInterval is the servers' --watch-progress-notify-interval
// in these runs (etcd's minimum is 100ms).
const progressNotifyInterval = 200 * time.Millisecond

// watchConns opens the watch streams' own connections.
func watchConns(t *testing.T, endpoint string) []pb.WatchClient {
	var ws []pb.WatchClient
	for range watchers {
		ws = append(ws, pb.NewWatchClient(framework.NewClient(t, endpoint).ActiveConnection()))
	}
	return ws
}

// checkWatches checks every recorded watcher of a run against the
// committed history and fails the test on a violation.
func checkWatches(t *testing.T, name string, res *RunResult) {
	t.Helper()
	if res.Committed == nil {
		t.Fatalf("%s: no watch recordings", name)
	}
	vs := CheckWatches(res.Committed, res.Watches, res.WatchThrough)
	events, responses := 0, 0
	for _, w := range res.Watches {
		for _, r := range w.Records {
			responses++
			events += len(r.Events)
		}
	}
	for _, v := range vs {
		t.Errorf("%s: watch guarantee violated: %s", name, v)
	}
	t.Logf("%s: %d watchers on %d streams (%d opened), %d responses, %d events and %d progress notifications checked against %d committed revisions (%d events)",
		name, len(res.Watches), len(watchers), res.WatchStreams, responses, events, res.Progress, len(res.Committed.Revs), res.Committed.Events())
}

// checkRun checks every segment of a run and fails the test, naming the
// visualisation, if one is not linearizable.
func checkRun(t *testing.T, name string, res *RunResult) {
	t.Helper()
	var total time.Duration
	ops := 0
	for _, seg := range res.Segments {
		seg.Name = name + "-" + seg.Name
		cr, err := Check(seg, checkTimeout)
		if err != nil {
			t.Fatalf("%s: %v", seg.Name, err)
		}
		total += cr.Duration
		ops += len(seg.Ops)
		switch cr.Result {
		case porcupine.Ok:
		case porcupine.Illegal:
			t.Fatalf("%s: history is not linearizable (%d operations); porcupine's visualisation: %s", seg.Name, len(seg.Ops), cr.Visualization)
		default:
			t.Fatalf("%s: porcupine could not decide within %v (%d operations); visualisation: %s", seg.Name, checkTimeout, len(seg.Ops), cr.Visualization)
		}
	}
	t.Logf("%s: %d segments, %d operations checked linearizable (%d client calls failed: outcome unknown) in %v",
		name, len(res.Segments), ops, res.Unknown, total.Round(time.Millisecond))
}

// TestLinearizable records concurrent puts, gets, ranges, deletes,
// compare-and-swap and multi-key txns against a steady server and checks
// the history with porcupine against etcd's KV model, revisions included.
// etcd runs first to prove the model.
func TestLinearizable(t *testing.T) {
	segments, segTime := 3, 400*time.Millisecond
	if soak() {
		segments, segTime = 40, 1500*time.Millisecond
	}
	segments = envInt(t, "METASTORE_LIN_SEGMENTS", segments)
	for _, b := range framework.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			srv := b.Start(t, framework.Options{WatchProgressNotifyInterval: progressNotifyInterval})
			clients, control := stubs(t, srv.Endpoint, 6)
			res, err := Run(RunOptions{Clients: clients, Control: control, Segments: segments, SegmentTime: segTime, Seed: 1,
				Watchers: watchers, WatchClients: watchConns(t, srv.Endpoint)})
			if err != nil {
				t.Fatal(err)
			}
			if res.Unknown > 0 {
				t.Errorf("%d calls failed against a steady server", res.Unknown)
			}
			checkRun(t, b.Name, res)
			checkWatches(t, b.Name, res)
		})
	}
}

// TestLinearizableAcrossCrashes runs the same workload against the
// metastore binary and SIGKILLs it at the end of every segment while the
// clients' last calls may be in flight, then restarts it. The history must
// stay linearizable across the restarts (so no acknowledged write is lost,
// no txn is half-applied, revisions never go back or repeat), and at the end
// every acknowledged write must still read back at the revision it was
// acknowledged with. METASTORE_CRASH_CYCLES sets the cycles (5; 100 with
// METASTORE_SOAK). With METASTORE_COMPAT_ONLY_ETCD it runs against etcd.
func TestLinearizableAcrossCrashes(t *testing.T) {
	t.Parallel()
	cycles := 5
	if soak() {
		cycles = 100
	}
	cycles = envInt(t, "METASTORE_CRASH_CYCLES", cycles)
	dir := t.TempDir()
	var p *framework.Process
	notify := "--watch-progress-notify-interval=" + progressNotifyInterval.String()
	if framework.OnlyEtcd() {
		p = framework.StartEtcdProcess(t, dir, notify)
	} else {
		p = framework.StartMetastoreProcess(t, dir, notify)
	}
	clients, control := stubs(t, p.Endpoint, 6)
	kills := 0
	// After every cycle: the segment's acknowledged writes read back at
	// their revisions, its acknowledged grants exist and its acknowledged
	// revokes stayed revoked, their keys gone.
	var leases LeaseCheck
	afterSegment := func(segs []Segment) error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		seg := segs[len(segs)-1]
		if err := VerifyAcked(ctx, control.KV, AckedWrites(seg.Ops)); err != nil {
			return err
		}
		since := int64(0)
		if len(seg.Ops) > 0 {
			since = seg.Ops[0].Call
			for _, op := range seg.Ops {
				since = min(since, op.Call)
			}
		}
		lc, err := VerifyLeases(ctx, control, segs, since)
		leases.Alive += lc.Alive
		leases.Revoked += lc.Revoked
		return err
	}
	res, err := Run(RunOptions{
		Clients: clients, Control: control, Segments: cycles, SegmentTime: 500 * time.Millisecond, Seed: 2,
		// Watchers see their streams break at every kill and resume from
		// the revision after the newest they saw.
		Watchers: watchers, WatchClients: watchConns(t, p.Endpoint),
		AfterSegment: afterSegment,
		// Calls still in flight when the kill lands may be queued for the
		// group commit, committed but unanswered, or lost: their outcome is
		// unknown and porcupine may linearize them either way.
		CallTimeout: 2 * time.Second,
		Interrupt: func(int) error {
			p.Kill()
			kills++
			return nil
		},
		Resume: func(int) error {
			if strings.Contains(p.Log(), "WARNING: DATA RACE") {
				return fmt.Errorf("data race reported by the server")
			}
			p.Restart()
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	checkRun(t, p.Kind, res)
	checkWatches(t, p.Kind, res)
	var acked []AckedWrite
	for _, seg := range res.Segments {
		acked = append(acked, AckedWrites(seg.Ops)...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := VerifyAcked(ctx, control.KV, acked); err != nil {
		t.Fatal(err)
	}
	lc, err := VerifyLeases(ctx, control, res.Segments, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d SIGKILL/restart cycles; %d acknowledged key writes all read back at their revisions (after their cycle and at the end); after each cycle %d checks of acknowledged grants alive with sensible TTLs and %d of acknowledged revokes gone with their keys; at the end %d and %d",
		kills, len(acked), leases.Alive, leases.Revoked, lc.Alive, lc.Revoked)
	if err := p.Stop(); err != nil {
		t.Errorf("graceful stop: %v", err)
	}
	if strings.Contains(p.Log(), "WARNING: DATA RACE") {
		t.Errorf("data race reported by the server:\n%s", p.Log())
	}
}
