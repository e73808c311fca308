package v3rpc

import (
	"math/rand/v2"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// TestInlineCall: only a serializable one-key Range runs on the reader
// (and only a linearizable one is deferred to its read round),
// judged from its encoding exactly as decoding it would, repeated fields
// included; other methods and malformed bytes never do.
func TestInlineCall(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		r := &pb.RangeRequest{
			Key:          []byte("k"),
			Serializable: rng.IntN(2) == 0,
			Limit:        rng.Int64N(3),
			Revision:     rng.Int64N(3),
			KeysOnly:     rng.IntN(2) == 0,
			CountOnly:    rng.IntN(2) == 0,
		}
		switch rng.IntN(3) {
		case 1:
			r.RangeEnd = []byte("z")
		case 2:
			r.RangeEnd = []byte{0}
		}
		msg, err := r.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			// A second encoding of the same fields after the first: the
			// last one wins.
			r2 := &pb.RangeRequest{Serializable: rng.IntN(2) == 0}
			if rng.IntN(2) == 0 {
				r2.RangeEnd = []byte("y")
			}
			more, err := r2.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			msg = append(msg, more...)
		}
		var dec pb.RangeRequest
		if err := dec.Unmarshal(msg); err != nil {
			t.Fatal(err)
		}
		want := dec.Serializable && len(dec.RangeEnd) == 0
		if got := InlineCall(rangeMethod, msg); got != want {
			t.Fatalf("InlineCall(%+v) = %v, want %v", &dec, got, want)
		}
		wantDeferred := !dec.Serializable && len(dec.RangeEnd) == 0
		if got := DeferredRead(rangeMethod, msg); got != wantDeferred {
			t.Fatalf("DeferredRead(%+v) = %v, want %v", &dec, got, wantDeferred)
		}
		if InlineCall("/etcdserverpb.KV/Put", msg) || InlineCall("/etcdserverpb.KV/Txn", msg) {
			t.Fatal("a call other than Range runs inline")
		}
		if DeferredRead("/etcdserverpb.KV/Put", msg) || DeferredRead("/etcdserverpb.KV/Txn", msg) {
			t.Fatal("a call other than Range is deferred")
		}
		for n := range msg {
			InlineCall(rangeMethod, msg[:n]) // a truncated message: read within its bounds
			DeferredRead(rangeMethod, msg[:n])
		}
	}
	if InlineCall(rangeMethod, []byte{0x38}) || DeferredRead(rangeMethod, []byte{0x38}) { // serializable's tag, no value
		t.Fatal("a truncated field runs inline or deferred")
	}
}
