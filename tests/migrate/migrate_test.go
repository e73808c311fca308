package migrate

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/metastore-dev/metastore/tests/framework"
)

const rootPassword = "rootpw"

// client returns a clientv3 client, as root when auth is on.
func client(t *testing.T, endpoint string, asRoot bool) *clientv3.Client {
	t.Helper()
	cfg := clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()}
	if asRoot {
		cfg.Username, cfg.Password = "root", rootPassword
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// buildHistory writes, through the raw KV/Lease/Auth stubs, a history
// with multi-key txns, overwrites, range deletes, leases (one revoked), a
// physical compaction at a deletion's revision, writes after it, and auth
// (users with and without passwords, roles with key, range and prefix
// permissions), then enables auth. It returns the compaction revision.
func buildHistory(t *testing.T, ctx context.Context, cli *clientv3.Client) int64 {
	t.Helper()
	conn := cli.ActiveConnection()
	kv, lc, ac := pb.NewKVClient(conn), pb.NewLeaseClient(conn), pb.NewAuthClient(conn)
	for _, id := range []int64{101, 102, 103} {
		if _, err := lc.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: id, TTL: 3600}); err != nil {
			t.Fatal(err)
		}
	}
	put := func(k, v string, lease int64) {
		t.Helper()
		if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte(k), Value: []byte(v), Lease: lease}); err != nil {
			t.Fatal(err)
		}
	}
	var compactAt int64
	for i := range 240 {
		k := fmt.Sprintf("/reg/%02d", i%37)
		switch {
		case i%11 == 10:
			if _, err := kv.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte(fmt.Sprintf("/reg/%d", i%4)), RangeEnd: []byte(fmt.Sprintf("/reg/%d", i%4+1))}); err != nil {
				t.Fatal(err)
			}
		case i%9 == 8:
			var ops []*pb.RequestOp
			for j := range 4 {
				ops = append(ops, &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{
					Key: []byte(fmt.Sprintf("/txn/%d", (i+j)%6)), Value: []byte(fmt.Sprint(i))}}})
			}
			ops = append(ops, &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte(fmt.Sprintf("/reg/%02d", (i+5)%37))}}})
			if _, err := kv.Txn(ctx, &pb.TxnRequest{Success: ops}); err != nil {
				t.Fatal(err)
			}
		case i%5 == 0:
			put(k, strings.Repeat("x", i), []int64{101, 102, 103}[i%3])
		default:
			put(k, fmt.Sprintf("v%d", i), 0)
		}
		// The compaction lands on a deletion: etcd up to 3.4.33 and 3.5.15
		// removes the tombstone at the compacted revision from its key
		// bucket, later releases keep it, and HashKV leaves it out.
		if i == 120 {
			put("/compact/tomb", "t", 0)
			d, err := kv.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte("/compact/tomb")})
			if err != nil || d.Deleted != 1 {
				t.Fatalf("delete at the compaction revision: %v %v", d, err)
			}
			compactAt = d.Header.Revision
		}
		if i == 150 {
			if _, err := kv.Compact(ctx, &pb.CompactionRequest{Revision: compactAt, Physical: true}); err != nil {
				t.Fatal(err)
			}
		}
	}
	put("\x00binary\xff", "\x00\x01", 0)
	put("empty-value", "", 103)
	if _, err := lc.LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: 102}); err != nil {
		t.Fatal(err)
	}
	put("after-revoke", "1", 0)

	steps := []func() error{
		func() error {
			_, err := ac.UserAdd(ctx, &pb.AuthUserAddRequest{Name: "root", Password: rootPassword})
			return err
		},
		func() error { _, err := ac.RoleAdd(ctx, &pb.AuthRoleAddRequest{Name: "root"}); return err },
		func() error {
			_, err := ac.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: "root", Role: "root"})
			return err
		},
		func() error {
			_, err := ac.UserAdd(ctx, &pb.AuthUserAddRequest{Name: "alice", Password: "alicepw"})
			return err
		},
		func() error {
			_, err := ac.UserAdd(ctx, &pb.AuthUserAddRequest{Name: "certonly", Options: &authpb.UserAddOptions{NoPassword: true}})
			return err
		},
		func() error { _, err := ac.RoleAdd(ctx, &pb.AuthRoleAddRequest{Name: "reader"}); return err },
		func() error {
			_, err := ac.RoleGrantPermission(ctx, &pb.AuthRoleGrantPermissionRequest{Name: "reader", Perm: &authpb.Permission{PermType: authpb.READ, Key: []byte("/reg/"), RangeEnd: []byte("/reg0")}})
			return err
		},
		func() error {
			_, err := ac.RoleGrantPermission(ctx, &pb.AuthRoleGrantPermissionRequest{Name: "reader", Perm: &authpb.Permission{PermType: authpb.READWRITE, Key: []byte("/txn/1")}})
			return err
		},
		func() error {
			_, err := ac.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: "alice", Role: "reader"})
			return err
		},
		func() error {
			_, err := ac.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: "certonly", Role: "reader"})
			return err
		},
		func() error { _, err := ac.AuthEnable(ctx, &pb.AuthEnableRequest{}); return err },
	}
	for i, f := range steps {
		if err := f(); err != nil {
			t.Fatalf("auth step %d: %v", i, err)
		}
	}
	return compactAt
}

// state is everything compared between hops.
type state struct {
	Rev, Compact int64
	// KVs holds, per revision from the compacted one to the current one,
	// every key read at that revision.
	KVs map[int64][]*mvccpb.KeyValue
	// Hash is HashKV per revision (none at the compacted revision from etcd
	// 3.4, which refuses it).
	Hash map[int64]uint32
	// Leases: id → granted TTL and attached keys.
	Leases map[int64]string
	Users  map[string][]string
	Roles  map[string][]*authpb.Permission
	Auth   bool
	// AuthRev is the auth revision.
	AuthRev uint64
	// Events is a watch of every key from the revision after the compacted one.
	Events []string
}

func collect(t *testing.T, ctx context.Context, endpoint string) *state {
	t.Helper()
	cli := client(t, endpoint, true)
	conn := cli.ActiveConnection()
	kv, mc, lc, ac := pb.NewKVClient(conn), pb.NewMaintenanceClient(conn), pb.NewLeaseClient(conn), pb.NewAuthClient(conn)
	h0, err := mc.HashKV(ctx, &pb.HashKVRequest{})
	if err != nil {
		t.Fatal(err)
	}
	st := &state{Rev: h0.Header.Revision, Compact: h0.CompactRevision, KVs: map[int64][]*mvccpb.KeyValue{}, Hash: map[int64]uint32{},
		Leases: map[int64]string{}, Users: map[string][]string{}, Roles: map[string][]*authpb.Permission{}}
	for r := st.Compact; r <= st.Rev; r++ {
		rr, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: r})
		if err != nil {
			t.Fatalf("range at %d: %v", r, err)
		}
		st.KVs[r] = rr.Kvs
		h, err := mc.HashKV(ctx, &pb.HashKVRequest{Revision: r})
		if r == st.Compact && err != nil && strings.Contains(err.Error(), "compacted") {
			continue // etcd 3.4 answers HashKV only above the compacted revision
		}
		if err != nil {
			t.Fatal(err)
		}
		st.Hash[r] = h.Hash
	}
	if _, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("a"), Revision: st.Compact - 1}); err == nil || !strings.Contains(err.Error(), "compacted") {
		t.Fatalf("range below the compacted revision: %v", err)
	}
	ls, err := lc.LeaseLeases(ctx, &pb.LeaseLeasesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls.Leases {
		ttl, err := lc.LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: l.ID, Keys: true})
		if err != nil {
			t.Fatal(err)
		}
		keys := make([]string, len(ttl.Keys))
		for i, k := range ttl.Keys {
			keys[i] = string(k)
		}
		sort.Strings(keys)
		if ttl.TTL <= 0 || ttl.TTL > ttl.GrantedTTL {
			t.Fatalf("lease %d: remaining TTL %d of %d", l.ID, ttl.TTL, ttl.GrantedTTL)
		}
		st.Leases[l.ID] = fmt.Sprintf("ttl=%d keys=%q", ttl.GrantedTTL, keys)
	}
	as, err := ac.AuthStatus(ctx, &pb.AuthStatusRequest{})
	switch {
	case status.Code(err) == codes.Unimplemented:
		// etcd 3.4 has no AuthStatus: auth is on when a request without a
		// user is refused for it, and the caller reads the auth revision
		// from the snapshot file.
		_, err := pb.NewKVClient(client(t, endpoint, false).ActiveConnection()).Range(ctx, &pb.RangeRequest{Key: []byte("a")})
		if err != nil && !strings.Contains(err.Error(), "user name is empty") {
			t.Fatal(err)
		}
		st.Auth = err != nil
	case err != nil:
		t.Fatal(err)
	default:
		st.Auth, st.AuthRev = as.Enabled, as.AuthRevision
	}
	ul, err := ac.UserList(ctx, &pb.AuthUserListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range ul.Users {
		g, err := ac.UserGet(ctx, &pb.AuthUserGetRequest{Name: u})
		if err != nil {
			t.Fatal(err)
		}
		st.Users[u] = g.Roles
	}
	rl, err := ac.RoleList(ctx, &pb.AuthRoleListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rl.Roles {
		g, err := ac.RoleGet(ctx, &pb.AuthRoleGetRequest{Role: r})
		if err != nil {
			t.Fatal(err)
		}
		st.Roles[r] = g.Perm
	}
	// A watch resumed from an old revision (a Kubernetes informer's
	// resourceVersion) replays the same events.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	wc := cli.Watch(wctx, "\x00", clientv3.WithFromKey(), clientv3.WithRev(st.Compact+1), clientv3.WithPrevKV())
	for last := st.Compact; last < st.Rev; {
		wr, ok := <-wc
		if !ok {
			t.Fatalf("watch ended at %d of %d: %v", last, st.Rev, wctx.Err())
		}
		if err := wr.Err(); err != nil {
			t.Fatal(err)
		}
		for _, ev := range wr.Events {
			st.Events = append(st.Events, fmt.Sprintf("%v %+v prev=%+v", ev.Type, ev.Kv, ev.PrevKv))
			last = ev.Kv.ModRevision
		}
	}
	return st
}

// compare fails on any difference; skipHash names revisions whose HashKV is
// not compared (etcd answers the revision of a compaction it ran from a
// cache computed against the previous compaction).
func compare(t *testing.T, hop string, got, want *state, skipHash map[int64]bool) {
	t.Helper()
	if got.Rev != want.Rev || got.Compact != want.Compact {
		t.Fatalf("%s: revision %d compacted %d, want %d and %d", hop, got.Rev, got.Compact, want.Rev, want.Compact)
	}
	for r := want.Compact; r <= want.Rev; r++ {
		if !reflect.DeepEqual(got.KVs[r], want.KVs[r]) {
			t.Fatalf("%s: keys at revision %d differ:\n got %v\nwant %v", hop, r, got.KVs[r], want.KVs[r])
		}
		if !skipHash[r] && got.Hash[r] != want.Hash[r] {
			t.Errorf("%s: HashKV at revision %d = %d, want %d", hop, r, got.Hash[r], want.Hash[r])
		}
	}
	for name, pair := range map[string][2]any{
		"leases": {got.Leases, want.Leases}, "users": {got.Users, want.Users}, "roles": {got.Roles, want.Roles},
		"auth": {got.Auth, want.Auth}, "auth revision": {got.AuthRev, want.AuthRev}, "watch events": {got.Events, want.Events},
	} {
		if !reflect.DeepEqual(pair[0], pair[1]) {
			t.Errorf("%s: %s differ:\n got %v\nwant %v", hop, name, pair[0], pair[1])
		}
	}
}

// checkPasswords shows the password hashes moved: each user logs in with
// its password, and the no-password user cannot.
func checkPasswords(t *testing.T, endpoint string) {
	t.Helper()
	for user, pw := range map[string]string{"root": rootPassword, "alice": "alicepw"} {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, Username: user, Password: pw, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatalf("%s cannot log in: %v", user, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = cli.Get(ctx, "/reg/01")
		cancel()
		cli.Close()
		if err != nil {
			t.Fatalf("%s: %v", user, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := pb.NewAuthClient(client(t, endpoint, false).ActiveConnection()).Authenticate(ctx, &pb.AuthenticateRequest{Name: "alice", Password: "wrong"})
	if err == nil {
		t.Fatal("a wrong password was accepted")
	}
}

// etcdutlRestore restores file with etcdutl's library into a new etcd data
// dir and starts etcd there.
func etcdutlRestore(t *testing.T, file string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "etcd")
	peer := "http://127.0.0.1:" + fmt.Sprint(framework.FreePort(t))
	err := snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath:        file,
		Name:                "restored",
		OutputDataDir:       dir,
		PeerURLs:            []string{peer},
		InitialCluster:      "restored=" + peer,
		InitialClusterToken: "migrate",
	})
	if err != nil {
		t.Fatalf("etcdutl snapshot restore: %v", err)
	}
	cfg := embed.NewConfig()
	cfg.Name = "restored"
	cfg.Dir = dir
	cu, _ := url.Parse("http://127.0.0.1:" + fmt.Sprint(framework.FreePort(t)))
	pu, _ := url.Parse(peer)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = "restored=" + peer
	cfg.InitialClusterToken = "migrate"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.UnsafeNoFsync = true
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		t.Fatal("restored etcd not ready")
	}
	return cu.Host
}

func etcdctlSave(t *testing.T, endpoint, file string) {
	t.Helper()
	res := framework.Etcdctl(t, endpoint, "", "--user=root:"+rootPassword, "snapshot", "save", file)
	if res.ExitCode != 0 || !strings.Contains(res.Stdout, "Snapshot saved at "+file) {
		t.Fatalf("etcdctl snapshot save: exit %d\n%s\n%s", res.ExitCode, res.Stdout, res.Stderr)
	}
}

func metastoreRestore(t *testing.T, file, dir string, extra ...string) (string, error) {
	out, err := exec.Command(framework.MetastoreBinary(t), append([]string{"snapshot", "restore", file, "--data-dir", dir}, extra...)...).CombinedOutput()
	return string(out), err
}

// TestMigrateRoundTrip: etcd → metastore → etcd with etcd's own tools, the
// full history compared at every hop.
func TestMigrateRoundTrip(t *testing.T) {
	if framework.OnlyEtcd() {
		t.Skip("a migration to metastore")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	src := framework.StartEtcd(t, framework.Options{})
	compactAt := buildHistory(t, ctx, client(t, src.Endpoint, false))
	want := collect(t, ctx, src.Endpoint)
	if want.Compact != compactAt || len(want.Leases) != 2 || !want.Auth {
		t.Fatalf("source: compacted %d (want %d), %d leases, auth %v", want.Compact, compactAt, len(want.Leases), want.Auth)
	}
	// etcd answers HashKV at its last compaction from the hash it took
	// while compacting (against the previous one); a restored store (etcd
	// or metastore) has no such cache, so that revision is compared between
	// restored stores only.
	live := map[int64]bool{compactAt: true}

	dir := t.TempDir()
	etcdSnap := filepath.Join(dir, "etcd.db")
	etcdctlSave(t, src.Endpoint, etcdSnap)

	// etcd → metastore.
	msDir := filepath.Join(dir, "metastore")
	out, err := metastoreRestore(t, etcdSnap, msDir)
	if err != nil {
		t.Fatalf("metastore snapshot restore: %v\n%s", err, out)
	}
	if !strings.Contains(out, fmt.Sprintf("at revision %d", want.Rev)) {
		t.Errorf("restore output: %s", out)
	}
	ms := framework.StartMetastoreProcess(t, msDir)
	got := collect(t, ctx, ms.Endpoint)
	compare(t, "etcd → metastore", got, want, live)
	checkPasswords(t, ms.Endpoint)

	// etcd's fresh HashKV at the compaction revision (no cache) equals
	// metastore's.
	etcdAgain := etcdutlRestore(t, etcdSnap)
	fresh := collect(t, ctx, etcdAgain)
	compare(t, "etcd → etcd (etcdutl)", fresh, want, live)
	compare(t, "metastore vs restored etcd", got, fresh, nil)

	// metastore → etcd: etcdctl saves, etcdutl reads and restores.
	msSnap := filepath.Join(dir, "metastore.db")
	etcdctlSave(t, ms.Endpoint, msSnap)
	sm := snapshot.NewV3(zap.NewNop())
	stMs, err := sm.Status(msSnap)
	if err != nil {
		t.Fatalf("etcdutl snapshot status on metastore's snapshot: %v", err)
	}
	stEtcd, err := sm.Status(etcdSnap)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("etcdutl snapshot status: metastore %+v, etcd %+v", stMs, stEtcd)
	if stMs.Revision != want.Rev || stMs.TotalKey != stEtcd.TotalKey || stMs.TotalKey != len(want.KVs[want.Rev]) || stMs.Version != "3.6.0" {
		t.Errorf("status of metastore's snapshot %+v, etcd's %+v, want revision %d and %d keys", stMs, stEtcd, want.Rev, len(want.KVs[want.Rev]))
	}
	back := etcdutlRestore(t, msSnap)
	gotBack := collect(t, ctx, back)
	compare(t, "etcd → metastore → etcd", gotBack, fresh, nil)
	checkPasswords(t, back)

	// And metastore's snapshot restores into metastore too.
	ms2Dir := filepath.Join(dir, "metastore2")
	if out, err := metastoreRestore(t, msSnap, ms2Dir); err != nil {
		t.Fatalf("restore of metastore's own snapshot: %v\n%s", err, out)
	}
	ms2 := framework.StartMetastoreProcess(t, ms2Dir)
	compare(t, "metastore → metastore", collect(t, ctx, ms2.Endpoint), fresh, nil)
}

// TestMigrateRefusesDamage: a truncated or corrupted etcd snapshot is
// refused with a clear error and leaves no data directory; etcd's
// member/snap/db is accepted with --skip-hash-check only.
func TestMigrateRefusesDamage(t *testing.T) {
	if framework.OnlyEtcd() {
		t.Skip("metastore's restore command")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	src := framework.StartEtcd(t, framework.Options{})
	cli := client(t, src.Endpoint, false)
	for i := range 500 {
		if _, err := cli.Put(ctx, fmt.Sprintf("k%03d", i%50), strings.Repeat("v", i)); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "good.db")
	res := framework.Etcdctl(t, src.Endpoint, "", "snapshot", "save", good)
	if res.ExitCode != 0 {
		t.Fatalf("save: %s", res.Stderr)
	}
	b, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	flip := append([]byte(nil), b...)
	flip[len(flip)/3] ^= 0x40
	for name, tc := range map[string]struct {
		data  []byte
		extra []string
		msg   string
	}{
		"truncated":       {b[:len(b)*2/3], nil, "truncated"},
		"corrupted":       {flip, nil, "sha256"},
		"no trailer":      {b[:len(b)-32], nil, "--skip-hash-check"},
		"truncated, skip": {b[:(len(b)-32)/2/4096*4096], []string{"--skip-hash-check"}, "truncated"},
	} {
		f := filepath.Join(dir, "bad.db")
		if err := os.WriteFile(f, tc.data, 0o600); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "out")
		msg, err := metastoreRestore(t, f, out, tc.extra...)
		if err == nil || !strings.Contains(msg, tc.msg) {
			t.Errorf("%s: err %v, output %q (want it to mention %q)", name, err, msg, tc.msg)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("%s: data dir left behind", name)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 2 {
			t.Errorf("%s: leftovers %v", name, ents)
		}
	}
	// member/snap/db of a stopped etcd: no trailer, --skip-hash-check.
	memberDB := filepath.Join(dir, "member-db")
	if err := os.WriteFile(memberDB, b[:len(b)-32], 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "from-member-db")
	if msg, err := metastoreRestore(t, memberDB, out, "--skip-hash-check"); err != nil {
		t.Fatalf("member/snap/db with --skip-hash-check: %v %s", err, msg)
	}
	ms := framework.StartMetastoreProcess(t, out)
	r, err := client(t, ms.Endpoint, false).Get(ctx, "k", clientv3.WithPrefix())
	if err != nil || len(r.Kvs) != 50 || r.Header.Revision != 501 {
		t.Fatalf("restored from member/snap/db: %v %v", r, err)
	}
}

// TestHashKVMatchesEtcd: the same writes and compactions on etcd and on a
// fresh metastore give the same HashKV at every revision, the compaction
// revisions' cached hashes included.
func TestHashKVMatchesEtcd(t *testing.T) {
	if framework.OnlyEtcd() {
		t.Skip("compares metastore with etcd")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := framework.StartEtcd(t, framework.Options{})
	m := framework.StartMetastore(t, framework.Options{})
	var compactions []int64
	for _, s := range []*framework.Server{e, m} {
		kv := pb.NewKVClient(client(t, s.Endpoint, false).ActiveConnection())
		compactions = compactions[:0]
		for i := range 120 {
			k := []byte(fmt.Sprintf("h%d", i%13))
			var err error
			switch {
			case i%6 == 5:
				_, err = kv.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte("h"), RangeEnd: []byte(fmt.Sprintf("h%d", i%3))})
			case i%8 == 7:
				_, err = kv.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{
					{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("t1"), Value: k}}},
					{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("t0"), Value: k}}},
					{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: k}}},
				}})
			default:
				_, err = kv.Put(ctx, &pb.PutRequest{Key: k, Value: []byte(fmt.Sprint(i))})
			}
			if err != nil {
				t.Fatal(err)
			}
			if i%40 == 39 {
				r, _ := kv.Range(ctx, &pb.RangeRequest{Key: []byte("h0")})
				c := r.Header.Revision - 10
				compactions = append(compactions, c)
				if _, err := kv.Compact(ctx, &pb.CompactionRequest{Revision: c, Physical: true}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	ec, mc := pb.NewMaintenanceClient(client(t, e.Endpoint, false).ActiveConnection()), pb.NewMaintenanceClient(client(t, m.Endpoint, false).ActiveConnection())
	he, err := ec.HashKV(ctx, &pb.HashKVRequest{})
	if err != nil {
		t.Fatal(err)
	}
	last := compactions[len(compactions)-1]
	if he.CompactRevision != last {
		t.Fatalf("etcd compacted at %d, want %d", he.CompactRevision, last)
	}
	// Every compaction revision (answered by both from the hash taken while
	// compacting, against the previous compaction), then every revision
	// from the last compaction on.
	revs := append([]int64(nil), compactions[:len(compactions)-1]...)
	for r := last; r <= he.Header.Revision; r++ {
		revs = append(revs, r)
	}
	for _, r := range revs {
		a, err := ec.HashKV(ctx, &pb.HashKVRequest{Revision: r})
		if err != nil {
			t.Fatal(err)
		}
		b, err := mc.HashKV(ctx, &pb.HashKVRequest{Revision: r})
		if err != nil {
			t.Fatal(err)
		}
		if a.Hash != b.Hash || a.CompactRevision != b.CompactRevision || a.HashRevision != b.HashRevision || a.Header.Revision != b.Header.Revision {
			t.Errorf("revision %d: metastore %d/%d/%d, etcd %d/%d/%d", r, b.Hash, b.CompactRevision, b.Header.Revision, a.Hash, a.CompactRevision, a.Header.Revision)
		}
	}
	if a, _ := ec.HashKV(ctx, &pb.HashKVRequest{Revision: compactions[0]}); a == nil || a.CompactRevision != -1 {
		t.Fatalf("etcd's first compaction hash: %+v", a)
	}
}
