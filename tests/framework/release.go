package framework

import (
	"path/filepath"
	"strconv"
	"testing"
)

// EtcdRelease is an older etcd release (server and etcdctl) built from its
// own Go module under tools/ of the tests module: tools/etcd34 (etcd 3.4,
// module go.etcd.io/etcd) and tools/etcd35 (go.etcd.io/etcd/server/v3
// 3.5.x). Their dependency graphs cannot share a build with the tests
// module's etcd 3.6, so each is a module of its own and runs as a process.
type EtcdRelease struct {
	// Name is the directory under tools/ ("etcd34").
	Name string
	// Etcd and Etcdctl are the paths of the built binaries.
	Etcd, Etcdctl string
}

// BuildEtcdRelease builds tools/<name>/etcd and tools/<name>/etcdctl (once
// per test binary). They are built without -race even when the tests run
// under it: the code under test is metastore's, and the race runtime only
// slows the reference servers down.
func BuildEtcdRelease(t testing.TB, name string) EtcdRelease {
	t.Helper()
	dir, err := TestsModuleDir()
	if err != nil {
		t.Fatal(err)
	}
	mod := filepath.Join(dir, "tools", name)
	rel := EtcdRelease{Name: name}
	if rel.Etcd, err = buildWith(name+"-etcd", mod, "./etcd", false); err != nil {
		t.Fatalf("building %s's etcd: %v", name, err)
	}
	if rel.Etcdctl, err = buildWith(name+"-etcdctl", mod, "./etcdctl", false); err != nil {
		t.Fatalf("building %s's etcdctl: %v", name, err)
	}
	return rel
}

// Start starts the release's etcd as a one-member cluster named "default" on
// dataDir, a free loopback client port and peerPort (0: a free one; a
// restored data dir needs the peer URL it was restored with), plus extra
// flags, and waits until it serves.
func (r EtcdRelease) Start(t testing.TB, dataDir string, peerPort int, extra ...string) *Process {
	t.Helper()
	port := StablePort(t)
	if peerPort == 0 {
		peerPort = StablePort(t)
	}
	args := []string{
		"--name", "default",
		"--data-dir", dataDir,
		"--listen-client-urls", localURL(port),
		"--advertise-client-urls", localURL(port),
		"--listen-peer-urls", localURL(peerPort),
		"--initial-advertise-peer-urls", localURL(peerPort),
		"--initial-cluster", "default=" + localURL(peerPort),
		"--logger", "zap",
		"--log-level", "warn",
		// A reference for what is stored; durability is not under test,
		// and a graceful stop still leaves a complete member/snap/db.
		"--unsafe-no-fsync",
	}
	return startProcess(t, r.Name, r.Etcd, dataDir, "127.0.0.1:"+strconv.Itoa(port), append(args, extra...))
}

// Ctl runs the release's etcdctl as Etcdctl runs the reference one.
func (r EtcdRelease) Ctl(t testing.TB, endpoint string, args ...string) EtcdctlResult {
	t.Helper()
	return runEtcdctl(t, r.Etcdctl, endpoint, "", args)
}
