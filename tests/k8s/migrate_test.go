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
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"k8s.io/apimachinery/pkg/api/apitesting"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/apis/example"
	examplev1 "k8s.io/apiserver/pkg/apis/example/v1"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/etcd3"
	storagetesting "k8s.io/apiserver/pkg/storage/testing"
	"k8s.io/utils/clock"
)

// The cut-over of docs/migration.md, end to end: a Kubernetes storage layer
// on etcd, a snapshot saved as `etcdctl snapshot save` saves it, `metastore snapshot restore`, the same storage layer on
// metastore (objects, resourceVersions, a watch resumed from a
// pre-migration resourceVersion, an update with a pre-migration
// precondition), then back to etcd with etcdutl.

var etcdTools struct {
	once          sync.Once
	etcd, etcdutl string
	err           error
}

// buildEtcdTools builds etcd and etcdutl from the tests module (which pins
// etcd 3.6's server and etcdutl), once per test binary.
func buildEtcdTools(t *testing.T) (etcd, etcdutl string) {
	t.Helper()
	etcdTools.once.Do(func() {
		dir, err := os.MkdirTemp("", "metastore-k8s-etcd-")
		if err != nil {
			etcdTools.err = err
			return
		}
		testsDir, err := filepath.Abs("..")
		if err != nil {
			etcdTools.err = err
			return
		}
		for name, pkg := range map[string]string{"etcd": "./tools/etcd", "etcdutl": "go.etcd.io/etcd/etcdutl/v3"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg)
			cmd.Dir = testsDir
			var buf bytes.Buffer
			cmd.Stdout, cmd.Stderr = &buf, &buf
			if err := cmd.Run(); err != nil {
				etcdTools.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, buf.String())
				return
			}
		}
		etcdTools.etcd, etcdTools.etcdutl = filepath.Join(dir, "etcd"), filepath.Join(dir, "etcdutl")
	})
	if etcdTools.err != nil {
		t.Fatal(etcdTools.err)
	}
	return etcdTools.etcd, etcdTools.etcdutl
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startProcess runs bin with args until the test ends (or stop is called)
// and waits until endpoint serves.
func startProcess(t *testing.T, bin, endpoint string, args ...string) (stop func()) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), filepath.Base(bin)+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	stop = func() {
		select {
		case <-exited:
			return
		default:
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			data, _ := os.ReadFile(logPath)
			if len(data) > 4000 {
				data = data[len(data)-4000:]
			}
			t.Logf("%s log (tail):\n%s", bin, data)
		}
	})
	s := &server{Endpoint: endpoint, exited: exited}
	if err := s.waitReady(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	return stop
}

// storeOn builds the apiserver's etcd3 store over endpoint, as setup does.
func storeOn(t *testing.T, endpoint string) etcdStore {
	t.Helper()
	cli := newClient(t, endpoint)
	codec := apitesting.TestCodec(codecs, examplev1.SchemeGroupVersion)
	compactor := etcd3.NewCompactor(cli.Client, 0, clock.RealClock{}, nil)
	t.Cleanup(compactor.Stop)
	lc := etcd3.NewDefaultLeaseManagerConfig()
	versioner := storage.APIObjectVersioner{}
	s, err := etcd3.New(cli, compactor, codec,
		func() runtime.Object { return &example.Pod{} },
		func() runtime.Object { return &example.PodList{} },
		"", "/pods/", schema.GroupResource{Resource: "pods"},
		storagetesting.NewPrefixTransformer([]byte(valuePrefix), false), lc, etcd3.NewDefaultDecoder(codec, versioner), versioner)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func saveSnapshot(t *testing.T, endpoint, file string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// What etcdctl snapshot save does (clientv3/snapshot): the Snapshot
	// stream, database then SHA-256, written as it comes.
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	rc, err := cli.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(f, rc)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil || n%512 != 32 {
		t.Fatalf("snapshot save from %s: %d bytes, %v", endpoint, n, err)
	}
}

// watchEvents watches the pods from resourceVersion rv until n events came.
func watchEvents(t *testing.T, s storage.Interface, rv string, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := s.Watch(ctx, "/pods/ns/", storage.ListOptions{ResourceVersion: rv, Predicate: storage.Everything, Recursive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	var out []string
	for len(out) < n {
		select {
		case ev := <-w.ResultChan():
			if ev.Type == watch.Error {
				t.Fatalf("watch from %s: %v", rv, ev.Object)
			}
			p := ev.Object.(*example.Pod)
			out = append(out, fmt.Sprintf("%s %s rv=%s labels=%v", ev.Type, p.Name, p.ResourceVersion, p.Labels))
		case <-ctx.Done():
			t.Fatalf("watch from %s: %d of %d events: %q", rv, len(out), n, out)
		}
	}
	return out
}

func getPod(t *testing.T, s storage.Interface, name string) *example.Pod {
	t.Helper()
	out := &example.Pod{}
	if err := s.Get(context.Background(), podKey("ns", name), storage.GetOptions{}, out); err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	return out
}

func relabel(t *testing.T, s storage.Interface, name, value string, precondition *storage.Preconditions) (*example.Pod, error) {
	t.Helper()
	out := &example.Pod{}
	err := s.GuaranteedUpdate(context.Background(), podKey("ns", name), out, false, precondition, storage.SimpleUpdate(func(obj runtime.Object) (runtime.Object, error) {
		obj.(*example.Pod).Labels = map[string]string{"step": value}
		return obj, nil
	}), nil)
	return out, err
}

func TestMigrateEtcdToMetastoreAndBack(t *testing.T) {
	etcdBin, etcdutlBin := buildEtcdTools(t)
	ctx := context.Background()
	dir := t.TempDir()

	// A cluster's storage on etcd.
	ep := "127.0.0.1:" + strconv.Itoa(freePort(t))
	peer := "http://127.0.0.1:" + strconv.Itoa(freePort(t))
	stopEtcd := startProcess(t, etcdBin, ep, "--name", "src", "--data-dir", filepath.Join(dir, "etcd-src"),
		"--listen-client-urls", "http://"+ep, "--advertise-client-urls", "http://"+ep,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "src="+peer, "--log-level", "warn")
	onEtcd := storeOn(t, ep)
	a := mustCreate(ctx, t, onEtcd, pod("ns", "a"), 0)
	since := a.ResourceVersion // an informer's last seen resourceVersion
	mustCreate(ctx, t, onEtcd, pod("ns", "b"), 0)
	mustCreate(ctx, t, onEtcd, pod("ns", "c"), 0)
	a1, err := relabel(t, onEtcd, "a", "1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := onEtcd.Delete(ctx, podKey("ns", "c"), &example.Pod{}, nil, storage.ValidateAllObjectFunc, nil, storage.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	b := getPod(t, onEtcd, "b")
	wantEvents := watchEvents(t, onEtcd, since, 4)

	// Cut-over: snapshot, stop etcd, restore into metastore, start it.
	etcdSnap := filepath.Join(dir, "etcd.db")
	saveSnapshot(t, ep, etcdSnap)
	stopEtcd()
	msDir := filepath.Join(dir, "metastore")
	if out, err := exec.Command(metastoreBin, "snapshot", "restore", etcdSnap, "--data-dir", msDir).CombinedOutput(); err != nil {
		t.Fatalf("metastore snapshot restore: %v\n%s", err, out)
	}
	msEP := "127.0.0.1:" + strconv.Itoa(freePort(t))
	stopMS := startProcess(t, metastoreBin, msEP, "--name", "default", "--data-dir", msDir, "--listen-client-urls", "http://"+msEP, "--log-level", "warn")
	onMS := storeOn(t, msEP)

	// Objects and their resourceVersions survive; a watch resumed from
	// before the migration replays the same events.
	if got := getPod(t, onMS, "a"); got.ResourceVersion != a1.ResourceVersion || got.Labels["step"] != "1" {
		t.Fatalf("a on metastore: rv %s labels %v, want rv %s", got.ResourceVersion, got.Labels, a1.ResourceVersion)
	}
	if got := getPod(t, onMS, "b"); got.ResourceVersion != b.ResourceVersion {
		t.Fatalf("b on metastore: rv %s, want %s", got.ResourceVersion, b.ResourceVersion)
	}
	if got := watchEvents(t, onMS, since, 4); strings.Join(got, "\n") != strings.Join(wantEvents, "\n") {
		t.Fatalf("watch from %s on metastore:\n%s\nwant (etcd):\n%s", since, strings.Join(got, "\n"), strings.Join(wantEvents, "\n"))
	}
	// Optimistic concurrency keeps working: a stale precondition fails, the
	// current resourceVersion succeeds.
	stale := a.ResourceVersion
	if _, err := relabel(t, onMS, "a", "x", &storage.Preconditions{ResourceVersion: &stale}); err == nil {
		t.Fatal("an update with a stale resourceVersion precondition succeeded")
	}
	cur := a1.ResourceVersion
	a2, err := relabel(t, onMS, "a", "2", &storage.Preconditions{ResourceVersion: &cur})
	if err != nil {
		t.Fatalf("update with the migrated resourceVersion: %v", err)
	}
	if rvOf(t, a2) <= rvOf(t, a1) {
		t.Fatalf("resourceVersion went from %s to %s", a1.ResourceVersion, a2.ResourceVersion)
	}
	wantEvents = watchEvents(t, onMS, since, 5)

	// And back: snapshot from metastore, etcdutl restore, etcd again.
	msSnap := filepath.Join(dir, "metastore.db")
	saveSnapshot(t, msEP, msSnap)
	stopMS()
	peer2 := "http://127.0.0.1:" + strconv.Itoa(freePort(t))
	etcdDir := filepath.Join(dir, "etcd-back")
	if out, err := exec.Command(etcdutlBin, "snapshot", "restore", msSnap, "--data-dir", etcdDir,
		"--name", "back", "--initial-cluster", "back="+peer2, "--initial-advertise-peer-urls", peer2).CombinedOutput(); err != nil {
		t.Fatalf("etcdutl snapshot restore: %v\n%s", err, out)
	}
	ep2 := "127.0.0.1:" + strconv.Itoa(freePort(t))
	startProcess(t, etcdBin, ep2, "--name", "back", "--data-dir", etcdDir,
		"--listen-client-urls", "http://"+ep2, "--advertise-client-urls", "http://"+ep2,
		"--listen-peer-urls", peer2, "--initial-advertise-peer-urls", peer2, "--initial-cluster", "back="+peer2, "--log-level", "warn")
	back := storeOn(t, ep2)
	if got := getPod(t, back, "a"); got.ResourceVersion != a2.ResourceVersion || got.Labels["step"] != "2" {
		t.Fatalf("a back on etcd: rv %s labels %v, want rv %s", got.ResourceVersion, got.Labels, a2.ResourceVersion)
	}
	if got := watchEvents(t, back, since, 5); strings.Join(got, "\n") != strings.Join(wantEvents, "\n") {
		t.Fatalf("watch from %s back on etcd:\n%s\nwant (metastore):\n%s", since, strings.Join(got, "\n"), strings.Join(wantEvents, "\n"))
	}
	if _, err := relabel(t, back, "a", "3", &storage.Preconditions{ResourceVersion: &a2.ResourceVersion}); err != nil {
		t.Fatalf("update back on etcd with metastore's resourceVersion: %v", err)
	}
}
