package v3rpc

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/metadata"
)

// leanValueCtx is a transport context that reads metadata itself, as
// the lean transport's does.
type leanValueCtx struct {
	context.Context
	v string
}

func (c leanValueCtx) FirstIncomingValue(key string) (string, bool) { return c.v, key == "k" }

// A deferred call's context carries its round's outcome under the key only
// DeferRead sets, and keeps answering for the transport's context: values,
// and metadata both through the lean transport's reader and grpc-go's.
func TestReadDoneCtx(t *testing.T) {
	type key struct{}
	base := metadata.NewIncomingContext(context.WithValue(context.Background(), key{}, "x"), metadata.Pairs("k", "grpc-go"))
	fail := errors.New("round failed")
	c := &readDoneCtx{Context: base, done: &readDone{err: fail}}
	if d, ok := c.Value(readDoneKey{}).(*readDone); !ok || d.err != fail {
		t.Fatalf("round outcome %v", c.Value(readDoneKey{}))
	}
	if c.Value(key{}) != "x" {
		t.Fatal("a value of the transport's context is lost")
	}
	if v, ok := c.FirstIncomingValue("k"); !ok || v != "grpc-go" {
		t.Fatalf("metadata through grpc-go's context: %q %v", v, ok)
	}
	if _, ok := c.FirstIncomingValue("missing"); ok {
		t.Fatal("a missing key found")
	}
	lean := &readDoneCtx{Context: leanValueCtx{Context: base, v: "lean"}, done: readOK}
	if v, ok := lean.FirstIncomingValue("k"); !ok || v != "lean" {
		t.Fatalf("metadata through the lean transport's reader: %q %v", v, ok)
	}
	if d := lean.Value(readDoneKey{}).(*readDone); d.err != nil {
		t.Fatalf("a round that succeeded reports %v", d.err)
	}
	// Without DeferRead, no outcome: linearizableRead runs its own round.
	if _, ok := base.Value(readDoneKey{}).(*readDone); ok {
		t.Fatal("a plain context carries a round's outcome")
	}
}
