package rangestream

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// metastoreBin is the metastore binary built from the repository root
// (with -race when the tests are); plainBin is one built without -race
// (the same file when the tests are not -race).
var metastoreBin, plainBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "metastore-rangestream")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	metastoreBin = filepath.Join(dir, "metastore")
	plainBin = metastoreBin
	builds := [][]string{{"-o", metastoreBin}}
	if raceEnabled {
		plainBin = filepath.Join(dir, "metastore-norace")
		builds = [][]string{{"-o", metastoreBin, "-race"}, {"-o", plainBin}}
	}
	for _, args := range builds {
		build := exec.Command("go", append(append([]string{"build"}, args...), "./cmd/metastore")...)
		build.Dir = filepath.Join("..", "..")
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building metastore: %v\n%s", err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// server is a running etcd or metastore.
type server struct {
	kind     string
	endpoint string // http://127.0.0.1:port
	pid      int
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startMetastore runs the metastore binary on a free port and a temporary
// data directory until the test ends; env is added to its environment.
func startMetastore(t testing.TB, maxRequestBytes int, env ...string) *server {
	t.Helper()
	return startMetastoreBin(t, metastoreBin, maxRequestBytes, env...)
}

// startMetastoreBin is startMetastore with the binary bin.
func startMetastoreBin(t testing.TB, bin string, maxRequestBytes int, env ...string) *server {
	t.Helper()
	ep := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	args := []string{"--data-dir", t.TempDir(), "--listen-client-urls", ep, "--advertise-client-urls", ep, "--log-level", "warn", "--bcrypt-cost", "4"}
	if maxRequestBytes > 0 {
		args = append(args, "--max-request-bytes", strconv.Itoa(maxRequestBytes))
	}
	cmd := exec.Command(bin, args...)
	// A -race binary otherwise sleeps a second at exit.
	cmd.Env = append(append(os.Environ(), "GORACE=atexit_sleep_ms=0"), env...)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("metastore log:\n%s", logs.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(ep + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-exited:
			t.Fatalf("metastore exited:\n%s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("metastore not ready: %v\n%s", err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return &server{kind: "metastore", endpoint: ep, pid: cmd.Process.Pid}
}

// startEtcd runs an embedded etcd 3.7 until the test ends.
func startEtcd(t testing.TB, maxRequestBytes int) *server {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Name = "default"
	cfg.Dir = t.TempDir()
	cu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", freePort(t)))
	pu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", freePort(t)))
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.UnsafeNoFsync = true
	cfg.BcryptCost = 4
	if maxRequestBytes > 0 {
		cfg.MaxRequestBytes = uint(maxRequestBytes)
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("etcd not ready")
	}
	return &server{kind: "etcd", endpoint: cu.String()}
}

// client returns a clientv3 (etcd 3.7) for s, closed when the test ends.
func (s *server) client(t testing.TB, user, password string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{s.endpoint},
		DialTimeout: 10 * time.Second,
		Username:    user,
		Password:    password,
		Logger:      zap.NewNop(),
		// Room for the unary Range the memory test compares with.
		MaxCallRecvMsgSize: 1<<31 - 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
