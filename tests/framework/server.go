package framework

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Options configure a server started by a Backend.
type Options struct {
	// MaxTxnOps is --max-txn-ops; 0 keeps the default (128).
	MaxTxnOps int
	// AuthToken is --auth-token ("simple" when empty).
	AuthToken string
	// AuthTokenTTL is --auth-token-ttl (whole seconds); 0 keeps the default.
	AuthTokenTTL time.Duration
	// BcryptCost is --bcrypt-cost; 0 means the minimum (4), so that tests
	// that add users stay fast.
	BcryptCost int
	// MaxRequestBytes is --max-request-bytes; 0 keeps the default (1.5 MiB).
	MaxRequestBytes int
	// WatchProgressNotifyInterval is --watch-progress-notify-interval; 0
	// keeps the default (10m). NB: etcd keeps it in a process-wide
	// variable, so an in-process etcd started with it changes it for every
	// in-process etcd started after.
	WatchProgressNotifyInterval time.Duration
	// DisableGRPCGateway is --enable-grpc-gateway=false.
	DisableGRPCGateway bool
	// QuotaBackendBytes is --quota-backend-bytes; 0 keeps the default
	// (2 GiB).
	QuotaBackendBytes int64
	// NoStrictReconfigCheck is --strict-reconfig-check=false.
	NoStrictReconfigCheck bool
}

func (o Options) bcryptCost() int {
	if o.BcryptCost == 0 {
		return 4
	}
	return o.BcryptCost
}

// Server is a running etcd-compatible server.
type Server struct {
	// Kind is "etcd" or "metastore".
	Kind string
	// Name is the member name (etcd's --name).
	Name string
	// Endpoint is the client address, host:port.
	Endpoint string
	// DataDir is the server's data directory.
	DataDir string
}

// Backend starts one kind of server.
type Backend struct {
	Name  string
	Start func(t testing.TB, o Options) *Server
}

// EtcdBackend starts a reference etcd in-process.
var EtcdBackend = Backend{Name: "etcd", Start: StartEtcd}

// MetastoreBackend starts metastore in-process.
var MetastoreBackend = Backend{Name: "metastore", Start: StartMetastore}

// Backends returns the servers every compatibility scenario runs against:
// etcd first (to prove the expectation), then metastore unless
// METASTORE_COMPAT_ONLY_ETCD is set.
func Backends() []Backend {
	if OnlyEtcd() {
		return []Backend{EtcdBackend}
	}
	return []Backend{EtcdBackend, MetastoreBackend}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// StablePort returns a free port on 127.0.0.1 below the kernel's ephemeral
// range, for a server that must be restarted on the same port: a port the
// kernel hands out for ":0" listeners or outgoing connections could be
// taken by someone else while the server is down.
func StablePort(t testing.TB) int {
	t.Helper()
	low := 32768
	if data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(data)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	lo := max(low-12000, 10000)
	if lo >= low {
		return FreePort(t)
	}
	for i := 0; i < 100; i++ {
		port := lo + rand.IntN(low-lo)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			l.Close()
			return port
		}
	}
	return FreePort(t)
}

func localURL(port int) string { return "http://127.0.0.1:" + strconv.Itoa(port) }

// NewClient returns a clientv3 client for endpoint, closed on cleanup.
func NewClient(t testing.TB, endpoint string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            []string{endpoint},
		DialTimeout:          10 * time.Second,
		DialKeepAliveTime:    30 * time.Second,
		DialKeepAliveTimeout: 10 * time.Second,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("client for %s: %v", endpoint, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Client returns a new client for s, closed on cleanup.
func (s *Server) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	return NewClient(t, s.Endpoint)
}

// waitReady polls endpoint with a serializable Get until it answers or
// timeout passes; exited (may be nil) reports an early process exit.
func waitReady(endpoint string, timeout time.Duration, exited <-chan struct{}) error {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		DialTimeout: timeout,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return err
	}
	defer cli.Close()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(ctx, "/framework/ready-probe", clientv3.WithSerializable())
		cancel()
		// With auth enabled the probe is refused, which shows the server
		// is serving all the same.
		if err == nil || strings.Contains(err.Error(), "etcdserver: user name is empty") {
			return nil
		}
		lastErr = err
		select {
		case <-exited:
			return fmt.Errorf("server exited while starting (last probe error: %v)", lastErr)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("server at %s not ready after %v: %v", endpoint, timeout, lastErr)
}

// syncBuffer is a concurrency-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// tail returns at most the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
