package importlint

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/metastore-dev/metastore"

// forbidden lists, per package path prefix (relative to the module), the
// import prefixes it must not depend on, directly or indirectly; a ban
// ending in "$" is that one package, not its subpackages. A package is
// bound by the rule of its longest owner prefix only.
//
// The layering of the member: cmd → server → {server/serve, server/v3rpc,
// server/v3lock} → {server/guard, server/apply} → {mvcc, lease, auth,
// wasmhost}.
var forbidden = map[string][]string{
	"mvcc":  {"server", "lease", "auth", "wasmhost", "cmd"},
	"lease": {"mvcc", "server", "auth", "wasmhost", "cmd"},
	"auth":  {"mvcc", "server", "wasmhost", "lease", "cmd"},
	// The adapter that joins the chain and the policies.
	"auth/wasmpolicy": {"mvcc", "server", "lease", "cmd"},
	"wasmhost":        {"mvcc", "server", "auth", "lease", "cmd", "policies"},
	"server/apply":    {"server$", "server/config", "server/guard", "server/serve", "server/v3rpc", "server/v3lock", "cmd"},
	"server/guard":    {"server$", "server/serve", "server/v3rpc", "server/v3lock", "cmd"},
	// The Raft node sits beside apply, under the RPC layer.
	"server/raftnode": {"server$", "server/guard", "server/serve", "server/v3rpc", "server/v3lock", "cmd"},
	// The RPC adapters, the transport and Lock/Election are siblings: none
	// imports another or the member that wires them.
	"server/serve": {"server$", "server/v3rpc", "server/v3lock", "cmd"},
	// The lean gRPC transport is a library: none of ours.
	"server/serve/h2grpc": {"server", "mvcc", "lease", "auth", "wasmhost", "cmd", "policies"},
	"server/v3rpc":        {"server$", "server/serve", "server/v3lock", "cmd"},
	"server/v3lock":       {"server$", "server/serve", "server/v3rpc", "cmd"},
	// The SDK is compiled into every guest: it stays free of the server.
	"policies": {"server", "mvcc", "auth", "lease", "wasmhost", "cmd"},
	"server":   {"cmd"},
	// The ABI's numbers, shared by auth, wasmhost and the SDK: a leaf.
	"internal/policyabi": {"server", "mvcc", "auth", "lease", "wasmhost", "cmd", "policies"},
}

// external dependencies that must never be in the metastore binary.
var forbiddenExternal = []string{
	"go.etcd.io/etcd/server/",
	"go.etcd.io/etcd/client/v3",
}

type pkg struct {
	ImportPath string
	Deps       []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps=false", "-json", module+"/...")
	cmd.Dir = "../.."
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(out)
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("go list: %v", err)
	}
	return pkgs
}

func rel(path string) string {
	return strings.TrimPrefix(strings.TrimPrefix(path, module), "/")
}

func hasPrefixDir(path, prefix string) bool {
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

// ownerOf returns the most specific rule's prefix for path ("" for none).
func ownerOf(path string) string {
	best := ""
	for owner := range forbidden {
		if hasPrefixDir(path, owner) && len(owner) > len(best) {
			best = owner
		}
	}
	return best
}

func banned(path, ban string) bool {
	if exact, ok := strings.CutSuffix(ban, "$"); ok {
		return path == exact
	}
	return hasPrefixDir(path, ban)
}

// TestRules checks the rule lookup itself, so that a typo cannot make the
// lint vacuous.
func TestRules(t *testing.T) {
	for path, want := range map[string]string{
		"server": "server", "server/config": "server", "server/apply": "server/apply",
		"server/guard": "server/guard", "auth/wasmpolicy": "auth/wasmpolicy", "auth": "auth", "cmd/metastore": "",
	} {
		if got := ownerOf(path); got != want {
			t.Errorf("ownerOf(%q) = %q, want %q", path, got, want)
		}
	}
	if !banned("server", "server$") || banned("server/apply", "server$") || !banned("server/v3rpc/x", "server/v3rpc") {
		t.Error("banned matches wrongly")
	}
}

func TestImportDirection(t *testing.T) {
	pkgs := listPackages(t)
	if len(pkgs) == 0 {
		t.Fatal("go list found no packages")
	}
	for _, p := range pkgs {
		from := rel(p.ImportPath)
		for _, dep := range p.Deps {
			if !strings.HasPrefix(dep, module+"/") {
				continue
			}
			to := rel(dep)
			owner := ownerOf(from)
			for _, ban := range forbidden[owner] {
				if banned(to, ban) && !hasPrefixDir(to, owner) {
					t.Errorf("%s must not import %s (via dependency %s)", from, ban, to)
				}
			}
		}
	}
}

func TestBinaryHasNoEtcdServer(t *testing.T) {
	for _, p := range listPackages(t) {
		if p.ImportPath != module+"/cmd/metastore" {
			continue
		}
		for _, dep := range p.Deps {
			for _, ban := range forbiddenExternal {
				if strings.HasPrefix(dep, ban) {
					t.Errorf("the metastore binary depends on %s", dep)
				}
			}
		}
		return
	}
	t.Fatal("cmd/metastore not found")
}
