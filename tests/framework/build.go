// Package framework starts the servers the compatibility tests run against:
// metastore in-process and as a subprocess, a reference etcd in-process
// (go.etcd.io/etcd/server/v3/embed), and the real etcdctl built from etcd's
// Go module.
//
// Binaries are built at most once per test binary, on first use, into a
// temporary directory that Main removes when the tests are done.
package framework

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// OnlyEtcdEnv, when set to a non-empty value other than "0", skips every
// metastore side of the compatibility tests; the expectations are then
// checked against etcd alone.
const OnlyEtcdEnv = "METASTORE_COMPAT_ONLY_ETCD"

// OnlyEtcd reports whether METASTORE_COMPAT_ONLY_ETCD is set.
func OnlyEtcd() bool {
	v := os.Getenv(OnlyEtcdEnv)
	return v != "" && v != "0"
}

var (
	binDir     string
	binDirOnce sync.Once
	binDirErr  error

	builds sync.Map // name -> *buildResult
)

type buildResult struct {
	once sync.Once
	path string
	err  error
}

// Main runs the tests of a package and removes the binaries built for them.
// Use it from TestMain: os.Exit(framework.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	return code
}

// TestsModuleDir returns the directory of the tests module (the one holding
// this package), found by walking up from the working directory.
func TestsModuleDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(data, []byte("module github.com/metastore-dev/metastore/tests\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("framework: tests module not found above the working directory")
		}
		dir = parent
	}
}

// RootModuleDir returns the directory of the metastore module.
func RootModuleDir() (string, error) {
	d, err := TestsModuleDir()
	if err != nil {
		return "", err
	}
	return filepath.Dir(d), nil
}

// build runs `go build -o <binDir>/<name> <pkg>` in dir once per test binary,
// with -race when the tests run under it.
func build(name, dir, pkg string) (string, error) { return buildWith(name, dir, pkg, raceEnabled) }

func buildWith(name, dir, pkg string, race bool) (string, error) {
	v, _ := builds.LoadOrStore(name, &buildResult{})
	br := v.(*buildResult)
	br.once.Do(func() {
		binDirOnce.Do(func() { binDir, binDirErr = os.MkdirTemp("", "metastore-tests-bin-") })
		if binDirErr != nil {
			br.err = binDirErr
			return
		}
		out := filepath.Join(binDir, name)
		args := []string{"build", "-o", out}
		if race {
			args = append(args, "-race")
		}
		args = append(args, pkg)
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		cmd.Env = os.Environ()
		var stderr bytes.Buffer
		cmd.Stdout = &stderr
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			br.err = fmt.Errorf("go %s (in %s): %v\n%s", strings.Join(args, " "), dir, err, stderr.String())
			return
		}
		br.path = out
	})
	return br.path, br.err
}

// raceEnv is added to the environment of helper binaries: a -race binary
// otherwise sleeps a second at exit (atexit_sleep_ms defaults to 1000).
const raceEnv = "GORACE=atexit_sleep_ms=0"

// MetastoreBinary builds ./cmd/metastore of the root module (once) and
// returns its path.
func MetastoreBinary(t testing.TB) string {
	t.Helper()
	root, err := RootModuleDir()
	if err != nil {
		t.Fatal(err)
	}
	p, err := build("metastore", root, "./cmd/metastore")
	if err != nil {
		t.Fatalf("building metastore: %v", err)
	}
	return p
}

// EtcdctlBinary builds etcdctl from ./tools/etcdctl of the tests module
// (once) and returns its path.
func EtcdctlBinary(t testing.TB) string {
	t.Helper()
	dir, err := TestsModuleDir()
	if err != nil {
		t.Fatal(err)
	}
	p, err := build("etcdctl", dir, "./tools/etcdctl")
	if err != nil {
		t.Fatalf("building etcdctl: %v", err)
	}
	return p
}

// EtcdBinary builds the reference etcd server from ./tools/etcd of the tests
// module (once) and returns its path. Used to prove subprocess scenarios
// (e.g. the crash test) against etcd.
func EtcdBinary(t testing.TB) string {
	t.Helper()
	dir, err := TestsModuleDir()
	if err != nil {
		t.Fatal(err)
	}
	p, err := build("etcd", dir, "./tools/etcd")
	if err != nil {
		t.Fatalf("building etcd: %v", err)
	}
	return p
}

// RaceEnabled reports whether the test binary, and so the helper binaries
// it builds, run under the race detector (which multiplies memory use).
func RaceEnabled() bool { return raceEnabled }
