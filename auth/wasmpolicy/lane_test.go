package wasmpolicy

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/auth"
	"github.com/metastore-dev/metastore/internal/policyabi"
	"github.com/metastore-dev/metastore/wasmhost"
	"github.com/metastore-dev/metastore/wasmhost/wasmtest"
)

func marshal(t *testing.T, m interface{ Marshal() ([]byte, error) }) []byte {
	t.Helper()
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func put(key, value string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(key), Value: []byte(value)}}}
}

func del(key, end string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte(key), RangeEnd: []byte(end)}}}
}

func rng(key, end string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte(key), RangeEnd: []byte(end)}}}
}

func txn(success, failure []*pb.RequestOp, cmp ...*pb.Compare) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{Compare: cmp, Success: success, Failure: failure}}}
}

func TestCheckMutation(t *testing.T) {
	lane := [][]byte{[]byte("/t/")}
	origPut := marshal(t, &pb.PutRequest{Key: []byte("/t/a"), Value: []byte("1")})
	origDel := marshal(t, &pb.DeleteRangeRequest{Key: []byte("/t/a"), RangeEnd: []byte("/t/b")})
	mixed := &pb.TxnRequest{
		Compare: []*pb.Compare{{Key: []byte("/u/c"), Target: pb.Compare_VALUE}},
		Success: []*pb.RequestOp{put("/t/a", "1"), put("/u/x", "keep")},
		Failure: []*pb.RequestOp{rng("/u/", "/u0")},
	}
	origTxn := marshal(t, mixed)
	stamped := func(change func(*pb.TxnRequest)) []byte {
		m := *mixed
		m.Success = append([]*pb.RequestOp(nil), mixed.Success...)
		m.Failure = append([]*pb.RequestOp(nil), mixed.Failure...)
		change(&m)
		return marshal(t, &m)
	}
	for _, tc := range []struct {
		name     string
		kind     wasmhost.AdmitKind
		orig     []byte
		mut      []byte
		prefixes [][]byte
		want     string // "" = in its lane
	}{
		{"put in lane", policyabi.AdmitPut, origPut, wasmtest.Mutations["mutate-in-lane"], lane, ""},
		{"put moved out", policyabi.AdmitPut, origPut, wasmtest.Mutations["mutate-escape-put"], lane, `put of key "/u/x" is outside the policy's prefixes ["/t/"]`},
		{"put to the prefix's end", policyabi.AdmitPut, origPut, marshal(t, &pb.PutRequest{Key: []byte("/t0")}), lane, "outside"},
		{"put with no prefixes", policyabi.AdmitPut, origPut, wasmtest.Mutations["mutate-escape-put"], nil, ""},
		{"put-shaped as a delete", policyabi.AdmitDeleteRange, origDel, wasmtest.Mutations["mutate-as-delete"], lane, `delete of ["/t/a", "\xff") is outside`},
		{"put fields as a delete", policyabi.AdmitDeleteRange, origDel, wasmtest.Mutations["mutate-put-fields"], lane, "not a valid DeleteRangeRequest (the request's kind): it has fields the message type does not"},
		{"put-shaped as a put", policyabi.AdmitPut, origPut, wasmtest.Mutations["mutate-as-delete"], lane, ""},
		{"delete narrowed", policyabi.AdmitDeleteRange, origDel, marshal(t, &pb.DeleteRangeRequest{Key: []byte("/t/a")}), lane, ""},
		{"delete to the prefix end", policyabi.AdmitDeleteRange, origDel, marshal(t, &pb.DeleteRangeRequest{Key: []byte("/t/"), RangeEnd: []byte("/t0")}), lane, ""},
		{"delete past the prefix end", policyabi.AdmitDeleteRange, origDel, marshal(t, &pb.DeleteRangeRequest{Key: []byte("/t/"), RangeEnd: []byte("/t1")}), lane, "outside"},
		{"delete from key on", policyabi.AdmitDeleteRange, origDel, marshal(t, &pb.DeleteRangeRequest{Key: []byte("/t/"), RangeEnd: []byte{0}}), lane, `every key from "/t/"`},
		{"not a message", policyabi.AdmitPut, origPut, []byte{0xff, 0xff}, lane, "not a valid PutRequest"},
		{"txn stamped in lane, rest kept", policyabi.AdmitTxn, origTxn, stamped(func(m *pb.TxnRequest) { m.Success[0] = put("/t/a", "stamped") }), lane, ""},
		{"txn out-of-lane put changed", policyabi.AdmitTxn, origTxn, stamped(func(m *pb.TxnRequest) { m.Success[1] = put("/u/x", "changed") }), lane, `put of key "/u/x"`},
		{"txn out-of-lane put duplicated", policyabi.AdmitTxn, origTxn, stamped(func(m *pb.TxnRequest) { m.Success = append(m.Success, put("/u/x", "keep")) }), lane, `put of key "/u/x"`},
		{"txn failure delete added", policyabi.AdmitTxn, origTxn, stamped(func(m *pb.TxnRequest) { m.Failure = append(m.Failure, del("/", "\x00")) }), lane, `delete of every key from "/"`},
		{"txn compare moved", policyabi.AdmitTxn, origTxn, stamped(func(m *pb.TxnRequest) { m.Compare = []*pb.Compare{{Key: []byte("/v/c")}} }), lane, `compare of key "/v/c"`},
		{"txn range widened", policyabi.AdmitTxn, origTxn, stamped(func(m *pb.TxnRequest) { m.Failure[0] = rng("\x00", "\x00") }), lane, "range of every key"},
		{"txn nested in lane", policyabi.AdmitTxn, origTxn, stamped(func(m *pb.TxnRequest) {
			m.Success = append(m.Success, txn([]*pb.RequestOp{put("/t/n", "")}, []*pb.RequestOp{del("/t/", "/t0")}))
		}), lane, ""},
		{"txn nested out", policyabi.AdmitTxn, origTxn, wasmtest.Mutations["mutate-txn-nested"], lane, `put of key "/u/x"`},
		{"txn failure deletes all", policyabi.AdmitTxn, origTxn, wasmtest.Mutations["mutate-txn-delete"], lane, `delete of every key from "/t/"`},
		{"txn from a put", policyabi.AdmitTxn, origTxn, append([]byte{0x42, 0x00}, origTxn...), lane, "not a valid TxnRequest"},
	} {
		err := CheckMutation(tc.kind, tc.orig, tc.mut, tc.prefixes)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want in its lane", tc.name, err)
		case tc.want != "" && (err == nil || !errors.Is(err, ErrOutOfLane) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an ErrOutOfLane with %q", tc.name, err, tc.want)
		}
	}
	// Nesting is bounded.
	deep := &pb.TxnRequest{}
	for i := 0; i < 100; i++ {
		deep = &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestTxn{RequestTxn: deep}}}}
	}
	if err := CheckMutation(policyabi.AdmitTxn, origTxn, marshal(t, deep), lane); err == nil || !strings.Contains(err.Error(), "nested too deep") {
		t.Errorf("deep txn: %v", err)
	}
}

// TestAdmitterChecksLane: a mutation out of its lane is a failed admission
// (counted as bad_mutation): rejected under on_error reject, dropped (the
// write goes on unchanged) under ignore; one in its lane is handed on.
func TestAdmitterChecksLane(t *testing.T) {
	kinds := map[wasmhost.ErrorKind]int{}
	h, err := wasmhost.NewHost(wasmhost.Options{CacheDir: wasmtest.CacheDir(), Events: wasmhost.Events{
		Error: func(_ string, _ wasmhost.Hook, k wasmhost.ErrorKind, _ error) { kinds[k]++ },
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	mods := wasmtest.Modules()
	ctx := context.Background()
	load := func(name string, onErr wasmhost.OnError) *wasmhost.Policy {
		p, err := h.Load(ctx, wasmhost.Config{Name: name, Binary: mods[name], OnError: onErr,
			Limits: wasmhost.Limits{AdmitTimeout: 5 * time.Second, Instances: 1}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		return p
	}
	env := &Env{}
	match := Match{Prefixes: [][]byte{[]byte("/t/")}}
	r := &auth.Request{}
	r.Reset(policyabi.OpPut, "u")
	r.Add(policyabi.PermWrite, []byte("/t/a"), nil)
	msg := []byte("\x0a\x04/t/a\x12\x011")

	out := &Admitter{Policy: load("mutate-escape-put", wasmhost.FailClosed), Match: match, Env: env}
	d, err := out.Admit(ctx, r, policyabi.AdmitPut, msg)
	var de *DenyError
	if !errors.As(err, &de) || d.Verdict != wasmhost.Deny || d.Kind != wasmhost.KindBadMutation ||
		!strings.Contains(de.Reason, "bad_mutation") || !strings.Contains(de.Reason, `"/u/x"`) {
		t.Fatalf("out of lane, reject: %+v %v", d, err)
	}
	open := &Admitter{Policy: load("mutate-txn-delete", wasmhost.FailOpen), Match: match, Env: env}
	if d, err := open.Admit(ctx, r, policyabi.AdmitTxn, marshal(t, &pb.TxnRequest{Success: []*pb.RequestOp{put("/t/a", "1")}})); err != nil ||
		d.Verdict != wasmhost.Allow || d.Mutation != nil {
		t.Fatalf("out of lane, ignore: %+v %v", d, err)
	}
	in := &Admitter{Policy: load("mutate-in-lane", wasmhost.FailClosed), Match: match, Env: env}
	if d, err := in.Admit(ctx, r, policyabi.AdmitPut, msg); err != nil || d.Verdict != wasmhost.Mutated ||
		string(d.Mutation) != string(wasmtest.Mutations["mutate-in-lane"]) {
		t.Fatalf("in lane: %+v %v", d, err)
	}
	if kinds[wasmhost.KindBadMutation] != 2 {
		t.Fatalf("bad mutations counted: %v", kinds)
	}
}

// FuzzCheckMutation: arbitrary mutations never panic, and one accepted
// with a prefix set has every range it touches under the prefix or kept
// from the original.
func FuzzCheckMutation(f *testing.F) {
	for _, m := range wasmtest.Mutations {
		f.Add(uint8(1), m)
		f.Add(uint8(2), m)
		f.Add(uint8(3), m)
	}
	orig := &pb.TxnRequest{Success: []*pb.RequestOp{put("/u/keep", "v")}}
	origTxn, _ := orig.Marshal()
	f.Fuzz(func(t *testing.T, kind uint8, mut []byte) {
		k := wasmhost.AdmitKind(kind % 4)
		err := CheckMutation(k, origTxn, mut, [][]byte{[]byte("/t/")})
		if err != nil || k != policyabi.AdmitTxn {
			return
		}
		items, lerr := laneItems(k, mut, true)
		if lerr != nil {
			t.Fatalf("accepted a mutation that does not decode: %v", lerr)
		}
		for _, it := range items {
			if !rangeWithin(it.key, it.end, []byte("/t/")) && !(it.what == "put" && string(it.key) == "/u/keep") {
				t.Fatalf("accepted %s of [%q, %q)", it.what, it.key, it.end)
			}
		}
	})
}

// TestDeepTxnMutation: a mutation of 180,000 nested txns (1.4 MiB) is
// refused before it is decoded: the generated Unmarshal would recurse
// 180,000 levels (a Go stack of over 100 MB per call). 64 levels pass.
func TestDeepTxnMutation(t *testing.T) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.StackInuse
	deep := wasmtest.DeepTxn(180_000, "/t/a")
	if len(deep) > 1536*1024 {
		t.Fatalf("fixture is %d bytes", len(deep))
	}
	start := time.Now()
	_, err := laneItems(policyabi.AdmitTxn, deep, true)
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "txns nested too deep (over 64 levels)") {
		t.Fatalf("deep txn: %v", err)
	}
	runtime.ReadMemStats(&ms)
	t.Logf("%d-byte deep txn refused in %v, stack in use %d -> %d", len(deep), took, before, ms.StackInuse)
	if ms.StackInuse > before+8<<20 {
		t.Errorf("stack grew from %d to %d", before, ms.StackInuse)
	}
	if _, err := laneItems(policyabi.AdmitTxn, wasmtest.DeepTxn(64, "/t/a"), true); err != nil {
		t.Errorf("64 levels: %v", err)
	}
	if _, err := laneItems(policyabi.AdmitTxn, wasmtest.DeepTxn(65, "/t/a"), true); err == nil {
		t.Errorf("65 levels accepted")
	}
}
