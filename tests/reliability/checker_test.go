package reliability

import (
	"os"
	"slices"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/metastore-dev/metastore/tests/framework"
)

// op builds a porcupine operation for the hand-written histories.
func op(client int, call, ret int64, in Input, out Output) porcupine.Operation {
	return porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret}
}

// TestCheckerAcceptsAndRejects proves the model on small hand-written
// histories: etcd's answers pass, and each kind of lie is caught.
func TestCheckerAcceptsAndRejects(t *testing.T) {
	put := Input{Kind: OpPut, Key: 0, Value: "a"}
	get := Input{Kind: OpGet, Key: 0}
	a2 := KV{Value: "a", Create: 2, Mod: 2, Version: 1}
	cases := []struct {
		name string
		ops  []porcupine.Operation
		ok   bool
	}{
		{"put then get", []porcupine.Operation{
			op(0, 0, 10, put, Output{Rev: 2}),
			op(1, 20, 30, get, Output{Rev: 2, KV: a2}),
		}, true},
		{"concurrent get may miss the put", []porcupine.Operation{
			op(0, 0, 10, put, Output{Rev: 2}),
			op(1, 5, 30, get, Output{Rev: 1}),
		}, true},
		{"stale read after the put returned", []porcupine.Operation{
			op(0, 0, 10, put, Output{Rev: 2}),
			op(1, 20, 30, get, Output{Rev: 1}),
		}, false},
		{"read at the new revision without the write", []porcupine.Operation{
			op(0, 0, 10, put, Output{Rev: 2}),
			op(1, 20, 30, get, Output{Rev: 2}),
		}, false},
		{"revision reused", []porcupine.Operation{
			op(0, 0, 10, put, Output{Rev: 2}),
			op(1, 20, 30, Input{Kind: OpPut, Key: 1, Value: "b"}, Output{Rev: 2}),
		}, false},
		{"revision skipped", []porcupine.Operation{
			op(0, 0, 10, put, Output{Rev: 3}),
		}, false},
		{"wrong version", []porcupine.Operation{
			op(0, 0, 10, put, Output{Rev: 2}),
			op(1, 20, 30, get, Output{Rev: 2, KV: KV{Value: "a", Create: 2, Mod: 2, Version: 2}}),
		}, false},
		{"delete of an absent key keeps the revision", []porcupine.Operation{
			op(0, 0, 10, Input{Kind: OpDelete, Key: 0}, Output{Rev: 1}),
		}, true},
		{"delete of an absent key must not bump the revision", []porcupine.Operation{
			op(0, 0, 10, Input{Kind: OpDelete, Key: 0}, Output{Rev: 2}),
		}, false},
		{"cas succeeds on the right mod revision", []porcupine.Operation{
			op(0, 0, 10, put, Output{Rev: 2}),
			op(0, 20, 30, Input{Kind: OpCAS, Key: 0, ExpectMod: 2, Value: "b"}, Output{Rev: 3, Succeeded: true}),
		}, true},
		{"cas succeeds on a stale mod revision", []porcupine.Operation{
			op(0, 0, 10, put, Output{Rev: 2}),
			op(0, 20, 30, Input{Kind: OpCAS, Key: 0, ExpectMod: 0, Value: "b"}, Output{Rev: 3, Succeeded: true}),
		}, false},
		{"half-applied multi-key txn", []porcupine.Operation{
			op(0, 0, 10, Input{Kind: OpMultiPut, Key: 0, Key2: 1, Value: "m"}, Output{Rev: 2}),
			op(1, 20, 30, Input{Kind: OpRangeAll}, Output{Rev: 2, All: [NumKeys]KV{{Value: "m", Create: 2, Mod: 2, Version: 1}}}),
		}, false},
		{"unknown write may have been applied", []porcupine.Operation{
			op(0, 0, never, put, Output{Unknown: true}),
			op(1, 20, 30, get, Output{Rev: 2, KV: a2}),
		}, true},
		{"unknown write may be lost", []porcupine.Operation{
			op(0, 0, never, put, Output{Unknown: true}),
			op(1, 20, 30, get, Output{Rev: 1}),
		}, true},
		{"acknowledged write lost", []porcupine.Operation{
			op(0, 0, 10, put, Output{Rev: 2}),
			op(1, 20, 30, Input{Kind: OpRangeAll}, Output{Rev: 1}),
		}, false},
	}
	// Leases: id 7 is granted by the client, keys attached to it, revoked.
	const l = 7
	grant := Input{Kind: OpGrant, Lease: l}
	lput0 := Input{Kind: OpLeasePut, Key: 0, Value: "x", Lease: l}
	lput1 := Input{Kind: OpLeasePut, Key: 1, Value: "y", Lease: l}
	revoke := Input{Kind: OpRevoke, Lease: l}
	x2 := KV{Value: "x", Create: 2, Mod: 2, Version: 1, Lease: l}
	attached := []porcupine.Operation{
		op(0, 0, 10, grant, Output{Rev: 1, Lease: l}),
		op(0, 20, 30, lput0, Output{Rev: 2}),
		op(0, 40, 50, lput1, Output{Rev: 3}),
	}
	with := func(more ...porcupine.Operation) []porcupine.Operation {
		return append(append([]porcupine.Operation(nil), attached...), more...)
	}
	cases = append(cases, []struct {
		name string
		ops  []porcupine.Operation
		ok   bool
	}{
		{"lease: revoke deletes attached keys at one revision", with(
			op(1, 60, 70, Input{Kind: OpGet, Key: 0}, Output{Rev: 3, KV: x2}),
			op(0, 80, 90, revoke, Output{Rev: 4}),
			op(1, 100, 110, Input{Kind: OpRangeAll}, Output{Rev: 4}),
			op(1, 120, 130, Input{Kind: OpTimeToLive, Lease: l}, Output{TTL: -1}),
		), true},
		{"lease: revoke deletes keys over two revisions", with(
			op(0, 80, 90, revoke, Output{Rev: 5}),
		), false},
		{"lease: revoke leaves a key behind", with(
			op(0, 80, 90, revoke, Output{Rev: 4}),
			op(1, 100, 110, Input{Kind: OpGet, Key: 0}, Output{Rev: 4, KV: x2}),
		), false},
		{"lease: a put detaches the key, the revoke then leaves it", with(
			op(0, 60, 70, Input{Kind: OpPut, Key: 0, Value: "z"}, Output{Rev: 4, KV: x2}),
			op(0, 80, 90, revoke, Output{Rev: 5}),
			op(1, 100, 110, Input{Kind: OpGet, Key: 0}, Output{Rev: 5, KV: KV{Value: "z", Create: 2, Mod: 4, Version: 2}}),
		), true},
		{"lease: key read without its lease", with(
			op(1, 60, 70, Input{Kind: OpGet, Key: 0}, Output{Rev: 3, KV: KV{Value: "x", Create: 2, Mod: 2, Version: 1}}),
		), false},
		{"lease: put with an unknown lease fails", []porcupine.Operation{
			op(0, 0, 10, Input{Kind: OpLeasePut, Key: 0, Value: "x", Lease: NeverGranted}, Output{Err: ErrLeaseNotFound}),
			op(0, 20, 30, Input{Kind: OpRevoke, Lease: NeverGranted}, Output{Err: ErrLeaseNotFound}),
		}, true},
		{"lease: put with an unknown lease succeeds", []porcupine.Operation{
			op(0, 0, 10, Input{Kind: OpLeasePut, Key: 0, Value: "x", Lease: NeverGranted}, Output{Rev: 2}),
		}, false},
		{"lease: put with a revoked lease succeeds", with(
			op(0, 80, 90, revoke, Output{Rev: 4}),
			op(0, 100, 110, lput0, Output{Rev: 5}),
		), false},
		{"lease: granted twice", with(
			op(1, 60, 70, grant, Output{Rev: 3, Lease: l}),
		), false},
		{"lease: second grant refused", with(
			op(1, 60, 70, grant, Output{Err: ErrLeaseExist}),
		), true},
		{"lease: server-chosen id already in use", with(
			op(1, 60, 70, Input{Kind: OpGrant}, Output{Rev: 3, Lease: l}),
		), false},
		{"lease: keep-alive of a revoked lease", with(
			op(0, 80, 90, revoke, Output{Rev: 4}),
			op(1, 100, 110, Input{Kind: OpKeepAlive, Lease: l}, Output{TTL: LeaseTTL}),
		), false},
		{"lease: keep-alive and TTL of a live lease", with(
			op(1, 60, 70, Input{Kind: OpKeepAlive, Lease: l}, Output{TTL: LeaseTTL}),
			op(1, 80, 90, Input{Kind: OpTimeToLive, Lease: l}, Output{TTL: LeaseTTL - 1, GrantedTTL: LeaseTTL}),
		), true},
		{"lease: acknowledged grant lost", with(
			op(1, 60, 70, Input{Kind: OpState}, Output{Rev: 3, All: [NumKeys]KV{x2, {Value: "y", Create: 3, Mod: 3, Version: 1, Lease: l}}}),
		), false},
		{"lease: unknown revoke may have happened", with(
			op(0, 80, never, revoke, Output{Unknown: true}),
			op(1, 100, 110, Input{Kind: OpState}, Output{Rev: 4}),
		), true},
	}...)
	t.Setenv(OutDirEnv, t.TempDir())
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cr, err := Check(Segment{Name: c.name, Init: State{Rev: 1}, Ops: c.ops}, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if got := cr.Result == porcupine.Ok; got != c.ok {
				t.Fatalf("linearizable = %v (%s), want %v", got, cr.Result, c.ok)
			}
			if !c.ok {
				if _, err := os.Stat(cr.Visualization); err != nil {
					t.Fatalf("no visualisation for an illegal history: %v", err)
				}
			}
		})
	}
}

// TestCheckerDetectsCorruptedHistory records a real history against
// metastore, checks that it passes, then corrupts it in several ways (a
// read that misses an acknowledged write, a write acknowledged at a reused
// revision, a stale compare-and-swap, a lost write in the final state) and
// requires porcupine to reject each: the check provably bites on histories
// of the size the other tests produce.
func TestCheckerDetectsCorruptedHistory(t *testing.T) {
	b := framework.MetastoreBackend
	if framework.OnlyEtcd() {
		b = framework.EtcdBackend
	}
	srv := b.Start(t, framework.Options{})
	clients, control := stubs(t, srv.Endpoint, 4)
	// A loaded machine may record a short history: run longer until it has
	// every kind of operation and response the corruptions below need.
	var res *RunResult
	for d := 300 * time.Millisecond; ; d *= 2 {
		var err error
		res, err = Run(RunOptions{Clients: clients, Control: control, Segments: 1, SegmentTime: d, Seed: 3,
			Watchers: watchers, WatchClients: watchConns(t, srv.Endpoint)})
		if err != nil {
			t.Fatal(err)
		}
		if corruptible(res) || d > 10*time.Second {
			break
		}
		t.Logf("a %v history lacks something to corrupt; recording a longer one", d)
	}
	t.Run("watch", func(t *testing.T) { corruptWatches(t, res) })
	seg := res.Segments[0]
	t.Setenv(OutDirEnv, t.TempDir())
	if cr, err := Check(seg, checkTimeout); err != nil || cr.Result != porcupine.Ok {
		t.Fatalf("uncorrupted history: %v %v (%s)", cr.Result, err, cr.Visualization)
	}
	// find returns the index of the last operation (the latest is the most
	// constrained) that satisfies f.
	find := func(f func(in Input, out Output) bool) int {
		for i := len(seg.Ops) - 2; i >= 0; i-- { // the last op is the controller's state read
			if f(seg.Ops[i].Input.(Input), seg.Ops[i].Output.(Output)) {
				return i
			}
		}
		t.Fatalf("history has no operation of the kind to corrupt")
		return -1
	}
	corruptions := []struct {
		name   string
		mutate func(ops []porcupine.Operation)
	}{
		{"get returns an older value", func(ops []porcupine.Operation) {
			i := find(func(in Input, out Output) bool { return in.Kind == OpGet && out.KV.Version > 0 })
			out := ops[i].Output.(Output)
			out.KV.Value += "-stale"
			ops[i].Output = out
		}},
		{"put acknowledged at a reused revision", func(ops []porcupine.Operation) {
			i := find(func(in Input, out Output) bool { return in.Kind == OpPut && !out.Unknown })
			out := ops[i].Output.(Output)
			out.Rev--
			ops[i].Output = out
		}},
		{"cas reports success on a stale revision", func(ops []porcupine.Operation) {
			i := find(func(in Input, out Output) bool { return in.Kind == OpCAS && !out.Unknown && !out.Succeeded })
			out := ops[i].Output.(Output)
			out.Succeeded, out.Rev, out.KV = true, out.Rev+1, KV{}
			ops[i].Output = out
		}},
		{"final state lost a key", func(ops []porcupine.Operation) {
			last := len(ops) - 1
			out := ops[last].Output.(Output)
			for k := range out.All {
				if out.All[k].Version > 0 {
					out.All[k] = KV{}
					break
				}
			}
			ops[last].Output = out
		}},
		{"final state still lists a revoked lease", func(ops []porcupine.Operation) {
			last := len(ops) - 1
			out := ops[last].Output.(Output)
			final := State{Leases: out.Leases}
			i := find(func(in Input, o Output) bool {
				return in.Kind == OpRevoke && !o.Unknown && o.Err == "" && !final.HasLease(in.Lease)
			})
			out.Leases = final.grant(ops[i].Input.(Input).Lease).Leases
			ops[last].Output = out
		}},
		{"final state lost a lease", func(ops []porcupine.Operation) {
			last := len(ops) - 1
			out := ops[last].Output.(Output)
			ids := State{Leases: out.Leases}.LeaseIDs()
			if len(ids) == 0 {
				t.Fatal("no lease left at the end of the history")
			}
			out.Leases = State{}.withLeases(ids[1:]).Leases
			ops[last].Output = out
		}},
		{"revoke of a live lease reported as not found", func(ops []porcupine.Operation) {
			i := find(func(in Input, out Output) bool { return in.Kind == OpRevoke && !out.Unknown && out.Err == "" })
			ops[i].Output = Output{Err: ErrLeaseNotFound}
		}},
	}
	for _, c := range corruptions {
		t.Run(c.name, func(t *testing.T) {
			bad := seg
			bad.Name = "corrupted-" + c.name
			bad.Ops = append([]porcupine.Operation(nil), seg.Ops...)
			c.mutate(bad.Ops)
			cr, err := Check(bad, checkTimeout)
			if err != nil {
				t.Fatal(err)
			}
			if cr.Result != porcupine.Illegal {
				t.Fatalf("corrupted history judged %s, want Illegal", cr.Result)
			}
			if _, err := os.Stat(cr.Visualization); err != nil {
				t.Fatalf("visualisation: %v", err)
			}
			t.Logf("rejected (%d operations); visualisation written to %s", len(bad.Ops), cr.Visualization)
		})
	}
}

// corruptWatches corrupts the real recording of the watcher on every key
// with prev_kv in one way per watch guarantee and requires the check of
// that guarantee to fail.
func corruptWatches(t *testing.T, res *RunResult) {
	if vs := CheckWatches(res.Committed, res.Watches, res.WatchThrough); len(vs) > 0 {
		t.Fatalf("uncorrupted recording: %v", vs)
	}
	var rec WatchRecording
	for _, w := range res.Watches {
		if w.Spec.Name == watchers[0][0].Name {
			rec = w
		}
	}
	// events returns the index of the first event response after at least
	// skip others that satisfies f.
	events := func(recs []WatchRecord, skip int, f func(WatchRecord) bool) int {
		for i, r := range recs {
			if r.Kind == RecEvents && f(r) {
				if skip == 0 {
					return i
				}
				skip--
			}
		}
		t.Fatalf("recording has no event response of the kind to corrupt")
		return -1
	}
	any := func(WatchRecord) bool { return true }
	corruptions := []struct {
		name, check string
		mutate      func(recs []WatchRecord) []WatchRecord
	}{
		{"event response dropped", WatchReliable, func(recs []WatchRecord) []WatchRecord {
			return slices.Delete(recs, events(recs, 3, any), events(recs, 3, any)+1)
		}},
		{"event response repeated", WatchUnique, func(recs []WatchRecord) []WatchRecord {
			i := events(recs, 3, any)
			return slices.Insert(recs, i+1, recs[i])
		}},
		{"event responses swapped", WatchOrdered, func(recs []WatchRecord) []WatchRecord {
			i, j := events(recs, 2, any), events(recs, 3, any)
			recs[i], recs[j] = recs[j], recs[i]
			return recs
		}},
		{"a revision's events split", WatchAtomic, func(recs []WatchRecord) []WatchRecord {
			i := events(recs, 0, func(r WatchRecord) bool { return len(r.Events) > 1 && r.Events[0].Rev == r.Events[1].Rev })
			a, b := recs[i], recs[i]
			a.Events, b.Events = recs[i].Events[:1], recs[i].Events[1:]
			recs[i] = a
			return slices.Insert(recs, i+1, b)
		}},
		{"progress ahead of undelivered events", WatchProgress, func(recs []WatchRecord) []WatchRecord {
			i := events(recs, 3, any)
			return slices.Insert(recs, i, WatchRecord{Kind: RecProgress, Rev: recs[i].Events[0].Rev, Stream: true})
		}},
		{"resumed past a revision", WatchResumable, func(recs []WatchRecord) []WatchRecord {
			// As if the stream broke before an event response and the
			// watcher came back one revision too late.
			i := events(recs, 3, any)
			start := recs[i].Events[0].Rev + 1
			return slices.Insert(slices.Delete(recs, i, i+1), i, WatchRecord{Kind: RecCreated, Start: start})
		}},
	}
	for _, c := range corruptions {
		t.Run(c.name, func(t *testing.T) {
			bad := rec
			bad.Records = c.mutate(slices.Clone(rec.Records))
			vs := CheckWatch(res.Committed, bad, res.WatchThrough)
			if !slices.ContainsFunc(vs, func(v WatchViolation) bool { return v.Check == c.check }) {
				t.Fatalf("want a %q violation, got %v", c.check, vs)
			}
			t.Logf("rejected: %v", vs[0])
		})
	}
}

// corruptible reports whether a recorded run has everything the
// corruptions of TestCheckerDetectsCorruptedHistory need.
func corruptible(res *RunResult) bool {
	ops := res.Segments[0].Ops
	final := State{Leases: ops[len(ops)-1].Output.(Output).Leases}
	var get, put, failedCAS, revoked, revoke bool
	for _, op := range ops[:len(ops)-1] {
		in, out := op.Input.(Input), op.Output.(Output)
		if out.Unknown || out.Err != "" {
			continue
		}
		switch in.Kind {
		case OpGet:
			get = get || out.KV.Version > 0
		case OpPut:
			put = true
		case OpCAS:
			failedCAS = failedCAS || !out.Succeeded
		case OpRevoke:
			revoke = true
			revoked = revoked || !final.HasLease(in.Lease)
		}
	}
	leaseLeft := len(final.LeaseIDs()) > 0
	var responses int
	var multi bool
	for _, w := range res.Watches {
		if w.Spec.Name != watchers[0][0].Name {
			continue
		}
		for _, r := range w.Records {
			if r.Kind == RecEvents {
				responses++
				multi = multi || len(r.Events) > 1 && r.Events[0].Rev == r.Events[1].Rev
			}
		}
	}
	return get && put && failedCAS && revoke && revoked && leaseLeft && responses >= 4 && multi
}
