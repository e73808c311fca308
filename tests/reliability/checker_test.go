package reliability

import (
	"os"
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
	res, err := Run(RunOptions{Clients: clients, Control: control, Segments: 1, SegmentTime: 300 * time.Millisecond, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
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
