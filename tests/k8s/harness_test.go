package k8s

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/kubernetes"
	"go.uber.org/zap"
	"google.golang.org/grpc/grpclog"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apiserver/pkg/apis/example"
	examplev1 "k8s.io/apiserver/pkg/apis/example/v1"
)

// metastoreBinEnv names a prebuilt metastore binary to test instead of
// building ./cmd/metastore from the root module.
const metastoreBinEnv = "METASTORE_BIN"

// serverRaceEnv set to "0" builds the metastore binary without -race (the
// soak does, for throughput). By default it is built with -race, whether or
// not this test binary is: data races in the server are caught under the
// apiserver's access patterns, and make test has already compiled the root
// module's packages that way.
const serverRaceEnv = "METASTORE_K8S_SERVER_RACE"

var (
	metastoreBin string

	scheme = runtime.NewScheme()
	codecs = serializer.NewCodecFactory(scheme)
)

func init() {
	metav1.AddToGroupVersion(scheme, metav1.SchemeGroupVersion)
	utilruntime.Must(example.AddToScheme(scheme))
	utilruntime.Must(examplev1.AddToScheme(scheme))
	// clientv3 logs every reconnect through grpclog; keep only errors.
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, io.Discard, os.Stderr))
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if p := os.Getenv(metastoreBinEnv); p != "" {
		metastoreBin = p
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "metastore-k8s-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	metastoreBin, err = buildMetastore(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// buildMetastore builds ./cmd/metastore of the root module (two levels up,
// found by its go.mod) into dir.
func buildMetastore(dir string) (string, error) {
	root, err := rootModuleDir()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "metastore")
	args := []string{"build", "-o", out}
	if raceEnabled || os.Getenv(serverRaceEnv) != "0" {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/metastore")
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go %s (in %s): %v\n%s", strings.Join(args, " "), root, err, buf.String())
	}
	return out, nil
}

func rootModuleDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(data, []byte("module github.com/metastore-dev/metastore\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("the metastore root module is not above %s", dir)
		}
		dir = parent
	}
}

// server is one metastore process serving a fresh data directory.
type server struct {
	Endpoint string
	cmd      *exec.Cmd
	exited   chan struct{}
	logPath  string
}

// startMetastore starts the metastore binary on a free loopback port with a
// fresh data directory and extra flags, waits until it serves, and stops it
// (SIGKILL) when the test ends; on failure the log's tail is printed.
func startMetastore(t testing.TB, extra ...string) *server {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		s, err := tryStart(t, extra)
		if err == nil {
			return s
		}
		lastErr = err // most likely the free port was taken meanwhile
	}
	t.Fatalf("metastore did not start: %v", lastErr)
	return nil
}

func tryStart(t testing.TB, extra []string) (*server, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir := t.TempDir()
	s := &server{
		Endpoint: "127.0.0.1:" + strconv.Itoa(port),
		exited:   make(chan struct{}),
		logPath:  filepath.Join(dir, "metastore.log"),
	}
	logf, err := os.Create(s.logPath)
	if err != nil {
		return nil, err
	}
	args := append([]string{
		"--name", "default",
		"--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", "http://" + s.Endpoint,
		"--log-level", "warn",
	}, extra...)
	s.cmd = exec.Command(metastoreBin, args...)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	// A -race binary otherwise sleeps a second at exit.
	s.cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	// Die with the test binary, even when -timeout kills it.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	go func() {
		s.cmd.Wait()
		logf.Close()
		close(s.exited)
	}()
	if err := s.waitReady(60 * time.Second); err != nil {
		s.kill()
		return nil, fmt.Errorf("%v\n%s", err, s.logTail())
	}
	t.Cleanup(func() {
		s.kill()
		if t.Failed() {
			t.Logf("metastore log (tail):\n%s", s.logTail())
		}
	})
	return s, nil
}

func (s *server) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	// Wait for the port first: a gRPC client that finds nothing listening
	// backs off for a second before it tries again.
	for {
		c, err := net.DialTimeout("tcp", s.Endpoint, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("metastore at %s not listening after %v: %v", s.Endpoint, timeout, err)
		}
		select {
		case <-s.exited:
			return fmt.Errorf("metastore exited while starting: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.Endpoint}, DialTimeout: timeout, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(ctx, "/k8s-test/ready-probe")
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("metastore at %s not ready after %v: %v", s.Endpoint, timeout, err)
		}
		select {
		case <-s.exited:
			return fmt.Errorf("metastore exited while starting: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *server) kill() {
	select {
	case <-s.exited:
		return
	default:
	}
	s.cmd.Process.Kill()
	<-s.exited
}

func (s *server) logTail() string {
	data, _ := os.ReadFile(s.logPath)
	if len(data) > 8000 {
		data = data[len(data)-8000:]
	}
	return string(data)
}

// newClient returns the client kube-apiserver builds (kubernetes.New over
// clientv3), closed at the end of the test.
func newClient(t testing.TB, endpoint string) *kubernetes.Client {
	t.Helper()
	c, err := kubernetes.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		DialTimeout: 10 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
