package policycmd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/wasmhost"
	"github.com/metastore-dev/metastore/wasmhost/wasmtest"

	"github.com/metastore-dev/metastore/internal/policyabi"
)

func TestMain(m *testing.M) {
	code := m.Run()
	wasmtest.Cleanup()
	os.Exit(code)
}

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	args = append(args[:1:1], append([]string{"--cache-dir", wasmtest.CacheDir()}, args[1:]...)...)
	code := Run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func write(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestEvalExamples(t *testing.T) {
	dir := t.TempDir()
	root := wasmtest.RepoRoot(t)
	tenant := write(t, dir, "tenant.wasm", wasmtest.GoPolicy(t, "policies/tenantisolation"))

	code, out, errs := run(t, "eval", "--module", tenant, "--request", filepath.Join(root, "testdata/requests/tenant.yaml"), "--timeout", "1s")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{
		"alice writes her own key (authorize):\n  verdict: allow",
		"alice lists every tenant (authorize):\n  verdict: deny\n  reason: \"tenant isolation: user \\\"alice\\\" may only access keys under \\\"/tenants/alice/\\\"\"",
		"alice reads outside the tenants tree (authorize):\n  verdict: no_opinion",
		"a txn that reaches into bob's keys (authorize):\n  verdict: deny",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	// A mutation is printed as the etcd message it decodes to.
	mutate := write(t, dir, "mutate.wasm", wasmtest.Modules()["mutate"])
	code, out, errs = run(t, "eval", "--module", mutate, "--request", filepath.Join(root, "testdata/requests/stamp.yaml"))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !strings.Contains(out, "a JSON value gets stamped (admit):\n  verdict: mutated\n  mutation: *etcdserverpb.PutRequest{key:\"k\" value:\"mutated\" }") {
		t.Errorf("mutation output:\n%s", out)
	}
}

func TestEvalErrors(t *testing.T) {
	dir := t.TempDir()
	mods := wasmtest.Modules()
	allow := write(t, dir, "allow.wasm", mods["allow"])
	loop := write(t, dir, "loop.wasm", mods["loop"])
	bad := write(t, dir, "bad.wasm", mods["wrong-abi"])
	req := write(t, dir, "r.yaml", []byte("user: u\nrange: {key: /a}\n"))

	if code, out, _ := run(t, "eval", "--module", allow, "--request", req); code != 0 || !strings.Contains(out, "verdict: allow") {
		t.Fatalf("allow: %d %s", code, out)
	}
	// A runaway guest: the on_error verdict and the kind, and exit 1 with
	// the failure named.
	if code, out, errs := run(t, "eval", "--module", loop, "--request", req); code != 1 ||
		!strings.Contains(out, "verdict: deny") || !strings.Contains(out, "error: timeout") ||
		!strings.Contains(errs, "failed (timeout): deadline of 5ms exceeded") {
		t.Fatalf("loop: %d %s %s", code, out, errs)
	}
	// A module that does not load names the file and the problem.
	if code, _, errs := run(t, "eval", "--module", bad, "--request", req); code != 1 || !strings.Contains(errs, bad) ||
		!strings.Contains(errs, `missing export "metastore_policy_v1"`) {
		t.Fatalf("bad module: %d %s", code, errs)
	}
	sum := sha256.Sum256(mods["allow"])
	if code, _, errs := run(t, "eval", "--module", allow, "--request", req, "--sha256", strings.Repeat("a", 64)); code != 1 ||
		!strings.Contains(errs, "sha256 mismatch: file has "+hex.EncodeToString(sum[:])) {
		t.Fatalf("sha: %d %s", code, errs)
	}
	badReq := write(t, dir, "bad.yaml", []byte("user: u\nputt: {key: /a}\n"))
	if code, _, errs := run(t, "eval", "--module", allow, "--request", badReq); code != 1 || !strings.Contains(errs, "field putt not found") {
		t.Fatalf("bad request: %d %s", code, errs)
	}
	if code, _, _ := run(t, "eval", "--request", req); code != 2 {
		t.Fatalf("missing module: %d", code)
	}
	if code, _, _ := run(t, "frobnicate"); code != 2 {
		t.Fatalf("unknown subcommand: %d", code)
	}
}

func TestEvalFromConfig(t *testing.T) {
	dir := t.TempDir()
	mod := wasmtest.Modules()["deny"]
	write(t, dir, "d.wasm", mod)
	sum := sha256.Sum256(mod)
	cfg := write(t, dir, "m.yaml", []byte(`policies:
  - name: d
    module: d.wasm
    sha256: `+hex.EncodeToString(sum[:])+`
    hooks: [authorize]
    on_error: no_opinion
`))
	req := write(t, dir, "r.yaml", []byte("user: u\nrange: {key: /a}\n"))
	code, out, errs := run(t, "eval", "--config", cfg, "--policy", "d", "--request", req)
	if code != 0 || !strings.Contains(out, "verdict: deny") || !strings.Contains(out, wasmtest.ReasonText) {
		t.Fatalf("%d %s %s", code, out, errs)
	}
	if code, _, errs := run(t, "eval", "--config", cfg, "--policy", "nope", "--request", req); code != 1 || !strings.Contains(errs, `no policy "nope"`) {
		t.Fatalf("%d %s", code, errs)
	}
}

func TestBench(t *testing.T) {
	dir := t.TempDir()
	allow := write(t, dir, "allow.wasm", wasmtest.Modules()["allow"])
	req := write(t, dir, "r.yaml", []byte("user: u\nput: {key: /a, value: v}\n"))
	code, out, errs := run(t, "bench", "--module", allow, "--request", req, "--n", "2000", "--concurrency", "2")
	if code != 0 {
		t.Fatalf("%d %s", code, errs)
	}
	for _, want := range []string{"calls:        2000 (admit, concurrency 2", "latency:      p50 ", "verdicts:     allow=2000"} {
		if !strings.Contains(out, want) {
			t.Errorf("bench output lacks %q:\n%s", want, out)
		}
	}
}

// TestCompileTxnRanges checks the ranges derived from a txn: compares
// read, then each op of both branches, nested txns included.
func TestCompileTxnRanges(t *testing.T) {
	r := Request{User: "u", Txn: &TxnSpec{
		Compare: []CompareSpec{{Key: "c", Target: "value", Value: "v"}},
		Success: []OpSpec{{Put: &PutSpec{Key: "p"}}, {Range: &RangeReqSpec{Key: "r", Prefix: true}}},
		Failure: []OpSpec{{Txn: &TxnSpec{Success: []OpSpec{{DeleteRange: &DeleteSpec{Key: "d", RangeEnd: "\x00"}}}}}},
	}}
	c, err := r.Compile()
	if err != nil {
		t.Fatal(err)
	}
	if c.Hook != wasmhost.HookAdmit || c.Kind != policyabi.AdmitTxn {
		t.Fatalf("%+v", c)
	}
	req, adm, err := wasmhost.DecodeRequest(c.Encoded)
	if err != nil {
		t.Fatal(err)
	}
	want := []wasmhost.Range{
		{Perm: policyabi.PermRead, Key: []byte("c")},
		{Perm: policyabi.PermWrite, Key: []byte("p")},
		{Perm: policyabi.PermRead, Key: []byte("r"), End: []byte("s")},
		{Perm: policyabi.PermWrite, Key: []byte("d"), End: []byte{0}},
	}
	if len(req.Ranges) != len(want) {
		t.Fatalf("ranges %+v", req.Ranges)
	}
	for i := range want {
		g := req.Ranges[i]
		if g.Perm != want[i].Perm || string(g.Key) != string(want[i].Key) || string(g.End) != string(want[i].End) {
			t.Errorf("range %d: %+v, want %+v", i, g, want[i])
		}
	}
	var txn pb.TxnRequest
	if err := txn.Unmarshal(adm.Message); err != nil || len(txn.Compare) != 1 || len(txn.Failure) != 1 {
		t.Fatalf("txn message: %v %v", err, txn.String())
	}
}

// TestHostileModules: eval and bench apply the server's limits to the
// hostile fixtures and end, in bounded time, with exit 1 and a message
// naming the failure; none hangs or kills the process.
func TestHostileModules(t *testing.T) {
	dir := t.TempDir()
	mods := wasmtest.Modules()
	req := write(t, dir, "r.yaml", []byte("user: u\nrange: {key: /a}\n"))
	admit := write(t, dir, "a.yaml", []byte("user: u\nput: {key: /t/a, value: v}\n"))
	for _, tc := range []struct {
		sub, module, req string
		want             string
		args             []string
	}{
		{"eval", "start-loop", req, "deadline of 1s exceeded", nil},
		{"eval", "initrt-loop", req, "deadline of 1s exceeded", nil},
		{"eval", "init-loops", req, "deadline of 1s exceeded", nil},
		{"eval", "random-loop", req, "failed (timeout)", nil},
		{"eval", "fdwrite-iovecs", req, "failed (timeout)", nil},
		{"eval", "poll-subs", admit, "failed (timeout)", nil},
		// NB: growing 16 MiB a page at a time copies the memory each time;
		// a generous deadline keeps the out-of-memory failure ahead of it.
		{"eval", "memory-bomb", req, "failed (oom)", []string{"--timeout", "10s"}},
		{"eval", "loop", req, "failed (fuel): fuel budget of 1000000 units exhausted", []string{"--timeout", "1m", "--fuel", "1000000"}},
		{"bench", "loop", req, "stopped after", nil},
		{"bench", "random-loop", admit, "stopped after", nil},
		{"bench", "start-loop", req, "deadline of 1s exceeded", nil},
		{"bench", "trap", req, "failed (trap)", nil},
	} {
		mod := write(t, dir, tc.module+".wasm", mods[tc.module])
		start := time.Now()
		code, _, errs := run(t, append([]string{tc.sub, "--module", mod, "--request", tc.req}, tc.args...)...)
		took := time.Since(start)
		if code != 1 || !strings.Contains(errs, tc.want) {
			t.Errorf("%s %s: exit %d, stderr %q; want 1 and %q", tc.sub, tc.module, code, errs, tc.want)
		}
		if took > 10*time.Second {
			t.Errorf("%s %s took %v", tc.sub, tc.module, took)
		}
	}
	// A bad reason is not a failure: the DENY stands, noted.
	bad := write(t, dir, "reason.wasm", mods["reason-trap"])
	if code, out, _ := run(t, "eval", "--module", bad, "--request", req); code != 0 ||
		!strings.Contains(out, "verdict: deny") || !strings.Contains(out, "note: bad_reason") {
		t.Errorf("bad reason: %d %s", code, out)
	}
}

// TestEvalMutationLane: with --config, eval checks a mutation against the
// policy's prefixes as the server does.
func TestEvalMutationLane(t *testing.T) {
	dir := t.TempDir()
	mods := wasmtest.Modules()
	var cfg strings.Builder
	cfg.WriteString("policies:\n")
	for _, name := range []string{"mutate-escape-put", "mutate-in-lane"} {
		write(t, dir, name+".wasm", mods[name])
		sum := sha256.Sum256(mods[name])
		cfg.WriteString("  - {name: " + name + ", module: " + name + ".wasm, sha256: " + hex.EncodeToString(sum[:]) +
			", hooks: [admit], match: {prefixes: [/t/]}}\n")
	}
	file := write(t, dir, "m.yaml", []byte(cfg.String()))
	req := write(t, dir, "r.yaml", []byte("user: u\nput: {key: /t/a, value: v}\n"))
	code, out, errs := run(t, "eval", "--config", file, "--policy", "mutate-escape-put", "--request", req)
	if code != 1 || !strings.Contains(out, "error: bad_mutation") || !strings.Contains(errs, `put of key "/u/x" is outside the policy's prefixes`) {
		t.Errorf("out of lane: %d %s %s", code, out, errs)
	}
	code, out, errs = run(t, "eval", "--config", file, "--policy", "mutate-in-lane", "--request", req)
	if code != 0 || !strings.Contains(out, "verdict: mutated") {
		t.Errorf("in lane: %d %s %s", code, out, errs)
	}
}
