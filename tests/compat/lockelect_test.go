package compat

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	gogoproto "github.com/gogo/protobuf/proto"
	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"

	cpb "github.com/metastore-dev/metastore/server/v3lock/v3lockpb"
	"github.com/metastore-dev/metastore/tests/framework"
)

// The Lock and Election services are driven with etcd's own generated
// clients (v3lockpb, v3electionpb from etcd's server module), so the
// scenarios also prove that metastore's hand-written wire types are
// etcd's on the wire.

func (e *env) lockClient() v3lockpb.LockClient {
	return v3lockpb.NewLockClient(e.cli.ActiveConnection())
}

func (e *env) electionClient() v3electionpb.ElectionClient {
	return v3electionpb.NewElectionClient(e.cli.ActiveConnection())
}

func (e *env) lock(name string, lease int64) (*v3lockpb.LockResponse, error) {
	ctx, cancel := e.ctx()
	defer cancel()
	resp, err := e.lockClient().Lock(ctx, &v3lockpb.LockRequest{Name: []byte(name), Lease: lease})
	e.record(fmt.Sprintf("Lock(%s, %x)", name, lease), resp, err)
	return resp, err
}

func (e *env) unlock(key string) (*v3lockpb.UnlockResponse, error) {
	ctx, cancel := e.ctx()
	defer cancel()
	resp, err := e.lockClient().Unlock(ctx, &v3lockpb.UnlockRequest{Key: []byte(key)})
	e.record(fmt.Sprintf("Unlock(%q)", key), resp, err)
	return resp, err
}

// lockAsync starts a Lock that is expected to block; the result arrives on
// the channel and is recorded by the caller with awaitLock.
type pendingCall[T any] struct {
	label string
	ch    chan struct {
		resp T
		err  error
	}
}

func startCall[T any](label string, f func(ctx context.Context) (T, error)) *pendingCall[T] {
	p := &pendingCall[T]{label: label, ch: make(chan struct {
		resp T
		err  error
	}, 1)}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		r, err := f(ctx)
		p.ch <- struct {
			resp T
			err  error
		}{r, err}
	}()
	return p
}

// stillBlocked asserts the call has not returned within d.
func stillBlocked[T any](e *env, p *pendingCall[T], d time.Duration) {
	e.t.Helper()
	select {
	case r := <-p.ch:
		e.t.Fatalf("%s returned while it should wait: %v %v", p.label, r.resp, r.err)
	case <-time.After(d):
	}
}

// await records the call's result once it returns (within 20s).
func await[T any](e *env, p *pendingCall[T]) (T, error) {
	e.t.Helper()
	select {
	case r := <-p.ch:
		e.record(p.label, r.resp, r.err)
		return r.resp, r.err
	case <-time.After(20 * time.Second):
		e.t.Fatalf("%s did not return", p.label)
	}
	panic("unreachable")
}

func TestLockService(t *testing.T) {
	scenario(t, framework.Options{}, func(e *env) {
		e.mustGrant(0x100, 60)
		e.mustGrant(0x200, 60)
		first, err := e.lock("job", 0x100)
		if err != nil {
			e.t.Fatal(err)
		}
		if string(first.Key) != "job/100" {
			e.t.Fatalf("key = %q", first.Key)
		}
		// The same lease again: the key is reused and still owns the lock.
		e.lock("job", 0x100)
		lc := e.lockClient()
		second := startCall("Lock(job, 200) waiting", func(ctx context.Context) (*v3lockpb.LockResponse, error) {
			return lc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("job"), Lease: 0x200})
		})
		stillBlocked(e, second, 500*time.Millisecond)
		e.mustRange(&pb.RangeRequest{Key: []byte("job/"), RangeEnd: []byte(prefixEnd("job/"))})
		e.unlock("job/100")
		if r, err := await(e, second); err != nil || string(r.Key) != "job/200" {
			e.t.Fatalf("second lock: %v %v", r, err)
		}
		e.unlock("job/200")
		e.unlock("job/200")  // nothing to delete: still a header
		e.lock("job", 0x999) // unknown lease
		e.unlock("")         // empty key
		e.lock("", 0x100)    // empty name: the key is "/100"

		// Three waiters queue in create-revision order.
		e.mustGrant(0x300, 60)
		e.lock("q", 0x100)
		w2 := startCall("Lock(q, 200) waiting", func(ctx context.Context) (*v3lockpb.LockResponse, error) {
			return lc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("q"), Lease: 0x200})
		})
		stillBlocked(e, w2, 300*time.Millisecond)
		w3 := startCall("Lock(q, 300) waiting", func(ctx context.Context) (*v3lockpb.LockResponse, error) {
			return lc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("q"), Lease: 0x300})
		})
		stillBlocked(e, w3, 300*time.Millisecond)
		e.unlock("q/100")
		await(e, w2)
		stillBlocked(e, w3, 300*time.Millisecond)
		e.Revoke(0x200) // releases by lease revocation
		await(e, w3)

		// Lease expiry releases the lock.
		e.mustGrant(0x400, 2)
		e.lock("exp", 0x400)
		w4 := startCall("Lock(exp, 100) waiting", func(ctx context.Context) (*v3lockpb.LockResponse, error) {
			return lc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("exp"), Lease: 0x100})
		})
		stillBlocked(e, w4, 300*time.Millisecond)
		await(e, w4)

		// A waiter that gives up withdraws its key (auth is off).
		e.lock("gone", 0x100)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, err = lc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("gone"), Lease: 0x300})
		cancel()
		if err == nil {
			e.t.Fatal("a lock held by another lease was granted")
		}
		waitFor(e, 5*time.Second, func() bool {
			return len(e.mustRangeQuiet("gone/", prefixEnd("gone/")).Kvs) == 1
		})
		e.mustRange(&pb.RangeRequest{Key: []byte("gone/"), RangeEnd: []byte(prefixEnd("gone/"))})

		// Without a lease, the lock runs under a fresh 60s lease.
		r, err := e.lockClient().Lock(context.Background(), &v3lockpb.LockRequest{Name: []byte("nolease")})
		if err != nil {
			e.t.Fatal(err)
		}
		kvs := e.mustRangeQuiet("nolease/", prefixEnd("nolease/")).Kvs
		if len(kvs) != 1 || kvs[0].Lease == 0 || string(r.Key) != fmt.Sprintf("nolease/%x", kvs[0].Lease) {
			e.t.Fatalf("lock without lease: key %q, kvs %v", r.Key, kvs)
		}
		ttl, err := e.lease.LeaseTimeToLive(context.Background(), &pb.LeaseTimeToLiveRequest{ID: kvs[0].Lease})
		if err != nil || ttl.GrantedTTL != 60 {
			e.t.Errorf("granted TTL = %v (%v), want 60", ttl, err)
		}
	})
}

func (e *env) campaign(name string, lease int64, value string) (*v3electionpb.CampaignResponse, error) {
	ctx, cancel := e.ctx()
	defer cancel()
	resp, err := e.electionClient().Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte(name), Lease: lease, Value: []byte(value)})
	e.record(fmt.Sprintf("Campaign(%s, %x, %s)", name, lease, value), resp, err)
	return resp, err
}

func (e *env) leader(name string) (*v3electionpb.LeaderResponse, error) {
	ctx, cancel := e.ctx()
	defer cancel()
	resp, err := e.electionClient().Leader(ctx, &v3electionpb.LeaderRequest{Name: []byte(name)})
	e.record(fmt.Sprintf("Leader(%s)", name), resp, err)
	return resp, err
}

func (e *env) proclaim(label string, l *v3electionpb.LeaderKey, value string) (*v3electionpb.ProclaimResponse, error) {
	ctx, cancel := e.ctx()
	defer cancel()
	resp, err := e.electionClient().Proclaim(ctx, &v3electionpb.ProclaimRequest{Leader: l, Value: []byte(value)})
	e.record("Proclaim "+label, resp, err)
	return resp, err
}

func (e *env) resign(label string, l *v3electionpb.LeaderKey) (*v3electionpb.ResignResponse, error) {
	ctx, cancel := e.ctx()
	defer cancel()
	resp, err := e.electionClient().Resign(ctx, &v3electionpb.ResignRequest{Leader: l})
	e.record("Resign "+label, resp, err)
	return resp, err
}

// observed records the next Observe response.
func (e *env) observed(label string, s v3electionpb.Election_ObserveClient) *v3electionpb.LeaderResponse {
	e.t.Helper()
	type res struct {
		r   *v3electionpb.LeaderResponse
		err error
	}
	ch := make(chan res, 1)
	go func() {
		r, err := s.Recv()
		ch <- res{r, err}
	}()
	select {
	case r := <-ch:
		e.record("Observe "+label, r.r, r.err)
		if r.err != nil {
			e.t.Fatalf("observe %s: %v", label, r.err)
		}
		return r.r
	case <-time.After(10 * time.Second):
		e.t.Fatalf("observe %s: nothing within 10s", label)
	}
	return nil
}

func TestElectionService(t *testing.T) {
	scenario(t, framework.Options{}, func(e *env) {
		e.mustGrant(0xa, 60)
		e.mustGrant(0xb, 60)
		e.leader("el") // no leader yet
		octx, ocancel := context.WithCancel(context.Background())
		defer ocancel()
		obs, err := e.electionClient().Observe(octx, &v3electionpb.LeaderRequest{Name: []byte("el")})
		if err != nil {
			e.t.Fatal(err)
		}
		a, err := e.campaign("el", 0xa, "a1")
		if err != nil {
			e.t.Fatal(err)
		}
		e.observed("first leader", obs)
		e.leader("el")
		// Campaigning again with the same lease keeps the candidacy and
		// proclaims the new value.
		e.campaign("el", 0xa, "a2")
		e.observed("re-campaign value", obs)
		ec := e.electionClient()
		b := startCall("Campaign(el, b, b1) waiting", func(ctx context.Context) (*v3electionpb.CampaignResponse, error) {
			return ec.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte("el"), Lease: 0xb, Value: []byte("b1")})
		})
		stillBlocked(e, b, 500*time.Millisecond)
		e.proclaim("leader", a.Leader, "a3")
		e.observed("proclaimed", obs)
		e.leader("el")
		wrongRev := *a.Leader
		wrongRev.Rev++
		e.proclaim("wrong rev", &wrongRev, "x")
		wrongKey := *a.Leader
		wrongKey.Key = []byte("el/ffff")
		e.proclaim("wrong key", &wrongKey, "x")
		e.proclaim("no leader key", nil, "x")
		e.resign("no leader key", nil)
		e.resign("wrong rev", &wrongRev) // not an error, nothing deleted
		e.leader("el")
		e.resign("leader", a.Leader)
		if r, err := await(e, b); err != nil || string(r.Leader.Key) != "el/b" {
			e.t.Fatalf("second campaign: %v %v", r, err)
		}
		e.observed("successor", obs)
		e.leader("el")
		e.campaign("el2", 0x77, "v") // unknown lease
		e.Revoke(0xb)
		e.leader("el")
		e.observed("after revoke: a new leader only when one is put", func() v3electionpb.Election_ObserveClient {
			e.campaign("el", 0xa, "a4")
			return obs
		}())
		ocancel()
	})
}

// TestConcurrencyWireTypes encodes each message with etcd's generated code
// and metastore's hand-written types and requires the same bytes both ways.
func TestConcurrencyWireTypes(t *testing.T) {
	hdr := &pb.ResponseHeader{ClusterId: 1, MemberId: 2, Revision: 3, RaftTerm: 4}
	kv := &mvccpb.KeyValue{Key: []byte("k"), CreateRevision: 5, ModRevision: 6, Version: 7, Value: []byte("v"), Lease: 8}
	type msg interface{ Marshal() ([]byte, error) }
	type unm interface{ Unmarshal([]byte) error }
	cases := []struct {
		name       string
		etcd, ours msg
	}{
		{"LockRequest", &v3lockpb.LockRequest{Name: []byte("n"), Lease: -5}, &cpb.LockRequest{Name: []byte("n"), Lease: -5}},
		{"LockResponse", &v3lockpb.LockResponse{Header: hdr, Key: []byte("n/1")}, &cpb.LockResponse{Header: hdr, Key: []byte("n/1")}},
		{"LockResponse empty header", &v3lockpb.LockResponse{Header: &pb.ResponseHeader{}}, &cpb.LockResponse{Header: &pb.ResponseHeader{}}},
		{"UnlockRequest", &v3lockpb.UnlockRequest{Key: []byte("x")}, &cpb.UnlockRequest{Key: []byte("x")}},
		{"UnlockResponse", &v3lockpb.UnlockResponse{Header: hdr}, &cpb.UnlockResponse{Header: hdr}},
		{"CampaignRequest", &v3electionpb.CampaignRequest{Name: []byte("e"), Lease: 9, Value: []byte("v")}, &cpb.CampaignRequest{Name: []byte("e"), Lease: 9, Value: []byte("v")}},
		{"CampaignResponse", &v3electionpb.CampaignResponse{Header: hdr, Leader: &v3electionpb.LeaderKey{Name: []byte("e"), Key: []byte("e/9"), Rev: 10, Lease: 9}},
			&cpb.CampaignResponse{Header: hdr, Leader: &cpb.LeaderKey{Name: []byte("e"), Key: []byte("e/9"), Rev: 10, Lease: 9}}},
		{"LeaderRequest", &v3electionpb.LeaderRequest{Name: []byte("e")}, &cpb.LeaderRequest{Name: []byte("e")}},
		{"LeaderResponse", &v3electionpb.LeaderResponse{Header: hdr, Kv: kv}, &cpb.LeaderResponse{Header: hdr, Kv: kv}},
		{"ResignRequest", &v3electionpb.ResignRequest{Leader: &v3electionpb.LeaderKey{Key: []byte("e/9"), Rev: 10}}, &cpb.ResignRequest{Leader: &cpb.LeaderKey{Key: []byte("e/9"), Rev: 10}}},
		{"ResignResponse", &v3electionpb.ResignResponse{Header: hdr}, &cpb.ResignResponse{Header: hdr}},
		{"ProclaimRequest", &v3electionpb.ProclaimRequest{Leader: &v3electionpb.LeaderKey{Name: []byte("e")}, Value: []byte("v")}, &cpb.ProclaimRequest{Leader: &cpb.LeaderKey{Name: []byte("e")}, Value: []byte("v")}},
		{"ProclaimResponse", &v3electionpb.ProclaimResponse{Header: hdr}, &cpb.ProclaimResponse{Header: hdr}},
	}
	for _, c := range cases {
		want, err := c.etcd.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.ours.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: metastore encodes %x, etcd %x", c.name, got, want)
		}
		// Decoding etcd's bytes and encoding again gives them back.
		back := gogoproto.Clone(c.etcd.(gogoproto.Message))
		back.Reset()
		if err := back.(unm).Unmarshal(got); err != nil {
			t.Errorf("%s: etcd cannot decode metastore's bytes: %v", c.name, err)
		}
		round := c.ours.(interface {
			msg
			unm
		})
		if err := round.Unmarshal(want); err != nil {
			t.Errorf("%s: metastore cannot decode etcd's bytes: %v", c.name, err)
			continue
		}
		if again, _ := round.Marshal(); !bytes.Equal(again, want) {
			t.Errorf("%s: decode+encode of etcd's bytes gives %x, want %x", c.name, again, want)
		}
	}
}

func TestGatewayLockElection(t *testing.T) {
	runGatewayScenario(t, framework.Options{}, func(g *gwEnv) {
		g.post("grant", "/v3/lease/grant", `{"TTL":60,"ID":4096}`)
		g.post("grant 2", "/v3/lease/grant", `{"TTL":60,"ID":8192}`)
		lk := g.post("lock", "/v3/lock/lock", fmt.Sprintf(`{"name":%q,"lease":4096}`, b64("gl")))
		g.post("lock unknown lease", "/v3/lock/lock", fmt.Sprintf(`{"name":%q,"lease":7}`, b64("gl")))
		g.post("lock malformed", "/v3/lock/lock", `{"name":`)
		g.post("unlock", "/v3/lock/unlock", fmt.Sprintf(`{"key":%q}`, str(lk["key"])))
		g.post("unlock empty", "/v3/lock/unlock", `{}`)
		g.post("v3beta lock", "/v3beta/lock/lock", fmt.Sprintf(`{"name":%q,"lease":8192}`, b64("gl")))

		g.post("leader none", "/v3/election/leader", fmt.Sprintf(`{"name":%q}`, b64("ge")))
		c := g.post("campaign", "/v3/election/campaign", fmt.Sprintf(`{"name":%q,"lease":4096,"value":%q}`, b64("ge"), b64("v1")))
		// The answer's headers come with its first line: open once there
		// is a leader.
		obs := g.openStream("observe", "/v3/election/observe", fmt.Sprintf(`{"name":%q}`, b64("ge")))
		obs.next(headerIDs...)
		g.post("leader", "/v3/election/leader", fmt.Sprintf(`{"name":%q}`, b64("ge")), headerIDs...)
		leader := c["leader"].(map[string]any)
		lj := fmt.Sprintf(`{"name":%q,"key":%q,"rev":%q,"lease":%q}`, str(leader["name"]), str(leader["key"]), str(leader["rev"]), str(leader["lease"]))
		g.post("proclaim", "/v3/election/proclaim", fmt.Sprintf(`{"leader":%s,"value":%q}`, lj, b64("v2")), headerIDs...)
		obs.next(headerIDs...)
		g.post("proclaim without leader", "/v3/election/proclaim", `{"value":"eA=="}`)
		g.post("proclaim not leader", "/v3/election/proclaim", fmt.Sprintf(`{"leader":{"key":%q,"rev":"1","lease":4096},"value":"eA=="}`, b64("ge/1")))
		g.post("resign", "/v3/election/resign", fmt.Sprintf(`{"leader":%s}`, lj), headerIDs...)
		g.post("leader after resign", "/v3/election/leader", fmt.Sprintf(`{"name":%q}`, b64("ge")))
		g.post("campaign again", "/v3/election/campaign", fmt.Sprintf(`{"name":%q,"lease":8192,"value":%q}`, b64("ge"), b64("w")), headerIDs...)
		obs.next(headerIDs...)
		obs.close()
	})
}

// TestAuthLockElection: with auth enabled, Lock and Election run as their
// caller (etcd's in-process client forwards the caller's token), and the
// release of an abandoned wait runs as nobody, so it is refused.
func TestAuthLockElection(t *testing.T) {
	scenario(t, framework.Options{}, func(e *env) {
		a := newAuthEnv(e)
		lc, ec := v3lockpb.NewLockClient(a.conn), v3electionpb.NewElectionClient(a.conn)
		leases := pb.NewLeaseClient(a.conn)
		a.setupRootAndEnable()
		root := a.as("root", "rootpw")
		for _, u := range []string{"alice", "bob"} {
			_, err := a.UserAdd(root, &pb.AuthUserAddRequest{Name: u, Password: u + "pw"})
			a.must(err)
			_, err = a.RoleAdd(root, "r"+u)
			a.must(err)
			_, err = a.UserGrantRole(root, u, "r"+u)
			a.must(err)
		}
		for _, p := range []string{"lk/", "el/"} {
			_, err := a.RoleGrant(root, "ralice", authpb.READWRITE, p, prefixEnd(p))
			a.must(err)
			_, err = a.RoleGrant(root, "rbob", authpb.READ, p, prefixEnd(p))
			a.must(err)
		}
		for _, id := range []int64{0x10, 0x20, 0x30} {
			_, err := a.do(root, fmt.Sprintf("LeaseGrant %x", id), func(ctx context.Context) (any, error) {
				return leases.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: id, TTL: 60})
			})
			a.must(err)
		}
		alice, bob := a.as("alice", "alicepw"), a.as("bob", "bobpw")
		bad := caller{name: "malformed", token: "not-a-token"}
		lock := func(c caller, name string, lease int64) (any, error) {
			return a.do(c, fmt.Sprintf("Lock(%s, %x)", name, lease), func(ctx context.Context) (any, error) {
				return lc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte(name), Lease: lease})
			})
		}
		for _, c := range []caller{anon, bad, bob} {
			lock(c, "lk", 0x10)
		}
		lock(alice, "other", 0x10)
		if _, err := lock(alice, "lk", 0x10); err != nil {
			e.t.Fatal(err)
		}
		// alice gives up waiting: her queued key cannot be withdrawn.
		ctx, cancel := context.WithTimeout(withToken(context.Background(), alice.token), 500*time.Millisecond)
		_, err := lc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("lk"), Lease: 0x20})
		cancel()
		if err == nil {
			e.t.Fatal("a held lock was granted")
		}
		time.Sleep(300 * time.Millisecond)
		left, err := a.Range(root, &pb.RangeRequest{Key: []byte("lk/"), RangeEnd: []byte(prefixEnd("lk/")), KeysOnly: true})
		a.must(err)
		e.wantKeys(left.(*pb.RangeResponse).Kvs, "lk/10", "lk/20")
		for _, c := range []caller{anon, bob, alice} {
			a.do(c, "Unlock lk/10", func(ctx context.Context) (any, error) {
				return lc.Unlock(ctx, &v3lockpb.UnlockRequest{Key: []byte("lk/10")})
			})
		}

		campaign := func(c caller, name string, lease int64) (any, error) {
			return a.do(c, fmt.Sprintf("Campaign(%s, %x)", name, lease), func(ctx context.Context) (any, error) {
				return ec.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte(name), Lease: lease, Value: []byte("v")})
			})
		}
		for _, c := range []caller{anon, bob} {
			campaign(c, "el", 0x30)
		}
		r, err := campaign(alice, "el", 0x30)
		if err != nil {
			e.t.Fatal(err)
		}
		lk := r.(*v3electionpb.CampaignResponse).Leader
		for _, c := range []caller{anon, bad, bob, alice} {
			a.do(c, "Leader el", func(ctx context.Context) (any, error) {
				return ec.Leader(ctx, &v3electionpb.LeaderRequest{Name: []byte("el")})
			})
			a.do(c, "Proclaim el", func(ctx context.Context) (any, error) {
				return ec.Proclaim(ctx, &v3electionpb.ProclaimRequest{Leader: lk, Value: []byte("w")})
			})
			// Observe ends without an error when its first read is refused.
			_, err := a.do(c, "Observe el", func(ctx context.Context) (any, error) {
				s, err := ec.Observe(ctx, &v3electionpb.LeaderRequest{Name: []byte("el")})
				if err != nil {
					return nil, err
				}
				return s.Recv()
			})
			if (err == nil) != (c == alice || c == bob) {
				e.t.Errorf("Observe as %s: %v", c.name, err)
			}
		}
		for _, c := range []caller{anon, bob, alice} {
			a.do(c, "Resign el", func(ctx context.Context) (any, error) {
				return ec.Resign(ctx, &v3electionpb.ResignRequest{Leader: lk})
			})
		}
	})
}
