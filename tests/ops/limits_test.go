package ops

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/metastore-dev/metastore/server/config"
	"github.com/metastore-dev/metastore/tests/framework"
)

// TestConnectionLimit: beyond --max-connections a connection is closed as
// soon as it is accepted; the connections within the limit keep working,
// and a slot freed by a closing client is reused.
func TestConnectionLimit(t *testing.T) {
	t.Parallel()
	const limit = 4
	m := framework.StartMetastoreConfig(t, func(c *config.Config) { c.Limits.MaxConnections = limit })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Hold the slots with raw connections that stay open.
	var held []net.Conn
	for range limit - 1 {
		c, err := net.Dial("tcp", m.Endpoint)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	cli := m.Client(t) // the last slot
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("put within the limit: %v", err)
	}
	// A flood beyond the limit: every extra connection is closed at once.
	for i := range 20 {
		c, err := net.Dial("tcp", m.Endpoint)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
			t.Fatalf("connection %d beyond the limit: read %v, want EOF", i, err)
		}
		c.Close()
	}
	if _, err := cli.Get(ctx, "k"); err != nil {
		t.Fatalf("existing client after the flood: %v", err)
	}
	held[0].Close()
	cli2 := m.Client(t)
	if _, err := cli2.Get(ctx, "k"); err != nil {
		t.Fatalf("new client after a slot was freed: %v", err)
	}
	for _, c := range held[1:] {
		c.Close()
	}
	// NB: the server frees those slots when it reads their EOF, a moment
	// after the close; until then a scrape would be refused as well.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		c, err := net.Dial("tcp", m.Endpoint)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err = c.Read(make([]byte, 1))
		c.Close()
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			break // accepted and kept open: a slot is free
		}
	}
	if v := scrape(t, m.Endpoint, "metastore_server_connections_refused_total"); v < 20 {
		t.Errorf("refused connections metric %v, want >= 20", v)
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// TestRateLimit: beyond the global token bucket requests fail with etcd's
// "too many requests" (code and message); health checks are exempt; the
// bucket refills.
func TestRateLimit(t *testing.T) {
	t.Parallel()
	m := framework.StartMetastoreConfig(t, func(c *config.Config) {
		c.Limits.RateLimit, c.Limits.RateBurst = 10, 10
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli := m.Client(t)
	ok, limited := 0, 0
	for range 40 {
		_, err := cli.Get(ctx, "k")
		switch {
		case err == nil:
			ok++
		case errors.Is(err, rpctypes.ErrTooManyRequests):
			var ee rpctypes.EtcdError
			if !errors.As(err, &ee) || ee.Code() != codes.ResourceExhausted || ee.Error() != status.Convert(rpctypes.ErrGRPCRequestTooManyRequests).Message() {
				t.Fatalf("limited request: %v", err)
			}
			limited++
		default:
			t.Fatalf("get: %v", err)
		}
	}
	// 10 from the burst plus at most what refills while the loop runs.
	if ok < 10 || ok > 25 || limited == 0 {
		t.Fatalf("ok=%d limited=%d of 40 at 10/s burst 10", ok, limited)
	}
	hc := healthpb.NewHealthClient(cli.ActiveConnection())
	for range 20 {
		if r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health check under the rate limit: %v %v", r, err)
		}
	}
	time.Sleep(300 * time.Millisecond) // three tokens back
	if _, err := cli.Get(ctx, "k"); err != nil {
		t.Fatalf("after refill: %v", err)
	}
	if v := scrape(t, m.Endpoint, `metastore_server_rate_limited_total{scope="global"}`); v != float64(limited) {
		t.Errorf("rate-limited metric %v, want %d", v, limited)
	}
}
