package v3rpc

import (
	"os"
	"regexp"
	"testing"
)

// TestEtcdVersionIsAPIModules: the version reported to clients is the
// release of go.etcd.io/etcd/api/v3 in go.mod, as a real etcd of that
// release reports it (etcd's e2e metrics tests compare the two).
func TestEtcdVersionIsAPIModules(t *testing.T) {
	mod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*go\.etcd\.io/etcd/api/v3 v(\S+)`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("go.etcd.io/etcd/api/v3 is not required in go.mod")
	}
	if want := string(m[1]); EtcdVersion != want {
		t.Fatalf("EtcdVersion %q, the etcd API module is %q: update EtcdVersion with go.mod", EtcdVersion, want)
	}
}
