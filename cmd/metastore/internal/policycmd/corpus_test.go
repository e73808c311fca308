package policycmd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/metastore-dev/metastore/server"
	"github.com/metastore-dev/metastore/server/config"
	"github.com/metastore-dev/metastore/server/guard"
	"github.com/metastore-dev/metastore/wasmhost"
	"github.com/metastore-dev/metastore/wasmhost/wasmtest"
)

// corpusLease is the lease the corpus attaches keys to: one inside and one
// outside /ok/, so a put to it or its revoke needs WRITE on both.
const corpusLease = 0x5eed

// corpus holds requests of every shape the server authorizes on key
// ranges, each as the server receives it and as a sample for eval.
var corpus = []struct {
	name   string
	sample Request
}{
	{"put", Request{Put: &PutSpec{Key: "/ok/a", Value: "v"}}},
	{"put prev_kv", Request{Put: &PutSpec{Key: "/ok/a", Value: "v", PrevKV: true}}},
	{"put to a lease with keys", Request{Put: &PutSpec{Key: "/ok/b", Value: "v", Lease: corpusLease}}},
	{"put prev_kv to a lease", Request{Put: &PutSpec{Key: "/ok/b", Value: "v", Lease: corpusLease, PrevKV: true}}},
	{"put outside", Request{Put: &PutSpec{Key: "/x/a", Value: "v"}}},
	{"delete", Request{DeleteRange: &DeleteSpec{Key: "/ok/d"}}},
	{"delete prefix prev_kv", Request{DeleteRange: &DeleteSpec{Key: "/ok/d/", Prefix: true, PrevKV: true}}},
	{"delete from key", Request{DeleteRange: &DeleteSpec{Key: "/zz/", RangeEnd: "\x00"}}},
	{"range", Request{Range: &RangeReqSpec{Key: "/ok/a"}}},
	{"range options", Request{Range: &RangeReqSpec{Key: "/ok/", Prefix: true, Revision: 1, Serializable: true, KeysOnly: true, CountOnly: true}}},
	{"range outside", Request{Range: &RangeReqSpec{Key: "/", Prefix: true}}},
	{"txn nested, compares on other keys", Request{Txn: &TxnSpec{
		Compare: []CompareSpec{{Key: "/x/c", Target: "version", Result: "greater"}, {Key: "/ok/c", RangeEnd: "/ok/d", Target: "mod", Result: "less", Mod: 9}},
		Success: []OpSpec{
			{Put: &PutSpec{Key: "/ok/t", Value: "1", PrevKV: true, Lease: corpusLease}},
			{Txn: &TxnSpec{
				Compare: []CompareSpec{{Key: "/ok/n", Target: "value", Value: "v"}},
				Success: []OpSpec{{DeleteRange: &DeleteSpec{Key: "/ok/n/", Prefix: true, PrevKV: true}}},
				Failure: []OpSpec{{Range: &RangeReqSpec{Key: "/ok/r", RangeEnd: "/ok/s"}}},
			}},
		},
		Failure: []OpSpec{{DeleteRange: &DeleteSpec{Key: "/ok/f"}}},
	}}},
	{"txn inside /ok/", Request{Txn: &TxnSpec{
		Compare: []CompareSpec{{Key: "/ok/c", Target: "version", Result: "equal"}},
		Success: []OpSpec{{Put: &PutSpec{Key: "/ok/t", Value: "1"}}},
		Failure: []OpSpec{{Range: &RangeReqSpec{Key: "/ok/", Prefix: true}}},
	}}},
	{"read-only txn", Request{Txn: &TxnSpec{Success: []OpSpec{{Range: &RangeReqSpec{Key: "/ok/a"}}}}}},
	{"lease revoke with keys", Request{LeaseRevoke: &LeaseRevokeSpec{ID: corpusLease}}},
}

// TestEvalAgreesWithServer feeds the corpus to a server (over gRPC) and to
// eval's path (Compile, then the policy) with the same policy: as user
// "echo" the policy writes out the request it was sent, so op, flags,
// revision and every range must be the same; as user "alice" it decides by
// the ranges, so the verdicts must be the same.
func TestEvalAgreesWithServer(t *testing.T) {
	dir := t.TempDir()
	bin := wasmtest.GoPolicy(t, "cmd/metastore/internal/policycmd/testdata/echo")
	sum := sha256.Sum256(bin)
	pol := config.Policy{Name: "echo", Module: write(t, dir, "echo.wasm", bin), SHA256: hex.EncodeToString(sum[:]), Hooks: []string{"authorize"},
		// Under -race on a busy machine a 5ms deadline would turn a
		// verdict into on_error's.
		Limits: config.PolicyLimits{AuthorizeTimeout: 5 * time.Second}}
	cfg := config.Default()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Server.ListenClientURLs = []string{"http://127.0.0.1:0"}
	cfg.Auth.BcryptCost = 4
	cfg.Authorization.PolicyWatchInterval = 0
	cfg.Policies = []config.Policy{pol}
	os.MkdirAll(cfg.DataDir, 0o700)
	os.CopyFS(filepath.Join(cfg.DataDir, guard.WasmCacheDir), os.DirFS(wasmtest.CacheDir()))
	srv, err := server.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	conn, err := grpc.NewClient(srv.ClientAddrs()[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	kv, lc, ac := pb.NewKVClient(conn), pb.NewLeaseClient(conn), pb.NewAuthClient(conn)
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	bg := context.Background()
	// The lease and its keys, before auth is on.
	must(lc.LeaseGrant(bg, &pb.LeaseGrantRequest{ID: corpusLease, TTL: 3600}))
	must(kv.Put(bg, &pb.PutRequest{Key: []byte("/ok/l1"), Lease: corpusLease}))
	must(kv.Put(bg, &pb.PutRequest{Key: []byte("/x/l2"), Lease: corpusLease}))
	for _, u := range []string{"root", "echo", "alice"} {
		must(ac.UserAdd(bg, &pb.AuthUserAddRequest{Name: u, Password: u}))
	}
	must(ac.UserGrantRole(bg, &pb.AuthUserGrantRoleRequest{User: "root", Role: "root"}))
	must(ac.AuthEnable(bg, &pb.AuthEnableRequest{}))
	token := func(user string) context.Context {
		resp, err := ac.Authenticate(bg, &pb.AuthenticateRequest{Name: user, Password: user})
		if err != nil {
			t.Fatal(err)
		}
		return metadata.AppendToOutgoingContext(bg, "token", resp.Token)
	}

	// eval's path, with the policy as the server loads it.
	hc, err := guard.HostConfig(&pol, cfg.Limits.MaxRequestBytes)
	if err != nil {
		t.Fatal(err)
	}
	host, err := wasmhost.NewHost(wasmhost.Options{CacheDir: wasmtest.CacheDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close(bg)
	p, err := host.Load(bg, hc)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	for _, user := range []string{"echo", "alice"} {
		uctx := token(user)
		for _, c := range corpus {
			sample := c.sample
			sample.User, sample.Hook = user, "authorize"
			sample.LeaseKeys = map[int64][]string{corpusLease: {"/ok/l1", "/x/l2"}}
			compiled, err := sample.Compile()
			if err != nil {
				t.Fatalf("%s: compile: %v", c.name, err)
			}
			d := p.Call(bg, compiled.Hook, compiled.Encoded)
			evalDenied, evalReason := d.Verdict == wasmhost.Deny, d.Reason

			srvErr := send(uctx, kv, lc, &sample)
			srvDenied, srvReason := false, ""
			if st, ok := status.FromError(srvErr); ok && st.Code() == codes.PermissionDenied {
				const prefix = `etcdserver: permission denied: policy "echo": `
				srvDenied, srvReason = true, strings.TrimPrefix(st.Message(), prefix)
			}
			if srvDenied != evalDenied || srvReason != evalReason {
				t.Errorf("%s as %s:\n server: denied=%v %q (err %v)\n   eval: denied=%v %q", c.name, user, srvDenied, srvReason, srvErr, evalDenied, evalReason)
			}
			if user == "echo" && !srvDenied {
				t.Errorf("%s: the echo policy was not consulted by the server: %v", c.name, srvErr)
			}
		}
	}
}

// send makes the sample's request to the server.
func send(ctx context.Context, kv pb.KVClient, lc pb.LeaseClient, r *Request) error {
	var err error
	switch {
	case r.Put != nil:
		_, err = kv.Put(ctx, r.Put.proto())
	case r.DeleteRange != nil:
		_, err = kv.DeleteRange(ctx, r.DeleteRange.proto())
	case r.Range != nil:
		_, err = kv.Range(ctx, r.Range.proto())
	case r.Txn != nil:
		var t *pb.TxnRequest
		if t, err = r.Txn.proto(); err == nil {
			_, err = kv.Txn(ctx, t)
		}
	case r.LeaseRevoke != nil:
		_, err = lc.LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: r.LeaseRevoke.ID})
	default:
		err = errors.New("no request")
	}
	return err
}

// TestSampleLeaseKeys: a YAML sample states the keys attached to a lease;
// a put to the lease and its revoke need WRITE on them, except for root.
func TestSampleLeaseKeys(t *testing.T) {
	path := write(t, t.TempDir(), "r.yaml", []byte(`
- name: put to a lease
  user: alice
  hook: authorize
  lease_keys: {5: [/a, /b]}
  put: {key: /k, lease: 5, prev_kv: true}
- name: revoke
  user: alice
  lease_keys: {5: [/a, /b]}
  lease_revoke: {id: 5}
- name: revoke as root
  user: admin
  roles: [root]
  lease_keys: {5: [/a, /b]}
  lease_revoke: {id: 5}
`))
	reqs, err := ReadRequests(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`op=2 flags=8 [2:"/k" 2:"/a" 2:"/b" 1:"/k"]`,
		`op=6 flags=0 [2:"/a" 2:"/b"]`,
		`op=6 flags=0 []`,
	}
	for i := range reqs {
		c, err := reqs[i].Compile()
		if err != nil {
			t.Fatalf("%s: %v", reqs[i].Name, err)
		}
		req, _, err := wasmhost.DecodeRequest(c.Encoded)
		if err != nil {
			t.Fatal(err)
		}
		got := fmt.Sprintf("op=%d flags=%d [", req.Op, req.Flags)
		for j, r := range req.Ranges {
			if j > 0 {
				got += " "
			}
			got += fmt.Sprintf("%d:%q", r.Perm, r.Key)
		}
		if got += "]"; got != want[i] {
			t.Errorf("%s: %s, want %s", reqs[i].Name, got, want[i])
		}
	}
}
