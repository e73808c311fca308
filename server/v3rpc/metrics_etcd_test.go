package v3rpc

import (
	"context"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/metadata"
)

// TestClientRequestsByVersion: requests are counted by type and the
// client-api-version they carry, "unknown" without one; a version that is
// not UTF-8 is neither counted nor able to panic the label check.
func TestClientRequestsByVersion(t *testing.T) {
	t.Run("grpc-go", func(t *testing.T) {
		testClientRequestsByVersion(t, func(kv ...string) context.Context {
			return metadata.NewIncomingContext(context.Background(), metadata.Pairs(kv...))
		})
	})
	// The lean transport's contexts answer FirstIncomingValue.
	t.Run("lean", func(t *testing.T) {
		testClientRequestsByVersion(t, func(kv ...string) context.Context {
			return firstValueCtx{metadata.NewIncomingContext(context.Background(), metadata.Pairs(kv...))}
		})
	})
}

// firstValueCtx answers FirstIncomingValue, and nothing through Value.
type firstValueCtx struct{ md context.Context }

func (c firstValueCtx) FirstIncomingValue(key string) (string, bool) {
	if v := metadata.ValueFromIncomingContext(c.md, key); len(v) > 0 {
		return v[0], true
	}
	return "", false
}

func (firstValueCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (firstValueCtx) Done() <-chan struct{}       { return nil }
func (firstValueCtx) Err() error                  { return nil }
func (firstValueCtx) Value(any) any               { return nil }

func testClientRequestsByVersion(t *testing.T, ctx func(kv ...string) context.Context) {
	m := newMetrics()
	m.clientRequest(ctx(rpctypes.MetadataClientAPIVersionKey, "3.6"), clientUnary)
	m.clientRequest(ctx(rpctypes.MetadataClientAPIVersionKey, "3.6"), clientUnary)
	m.clientRequest(ctx(rpctypes.MetadataClientAPIVersionKey, "3.6"), clientStream)
	m.clientRequest(ctx("other", "x"), clientUnary)
	m.clientRequest(ctx(rpctypes.MetadataClientAPIVersionKey, "\xff\xfe"), clientUnary)
	m.clientRequest(context.Background(), clientUnary)
	fams, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "etcd_server_client_requests_total" {
			continue
		}
		for _, s := range f.GetMetric() {
			var typ, ver string
			for _, l := range s.GetLabel() {
				switch l.GetName() {
				case "type":
					typ = l.GetValue()
				case "client_api_version":
					ver = l.GetValue()
				}
			}
			got[typ+" "+ver] = s.GetCounter().GetValue()
		}
	}
	want := map[string]float64{"unary 3.6": 2, "stream 3.6": 1, "unary unknown": 2}
	if len(got) != len(want) {
		t.Errorf("series %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %v, want %v", k, got[k], v)
		}
	}
}
