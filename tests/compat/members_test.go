package compat

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/status"

	"github.com/metastore-dev/metastore/tests/framework"
)

// memberEnv is one backend's side of a membership scenario. Member ids are
// chosen by the server (etcd derives them from the peer URLs and the time),
// so the transcript names them: "self" for the server's own member and the
// name a step gave to the member it added; ids nobody added print as
// numbers. The server's own peer and client URLs differ between the two
// servers and print as <self-peer> and <self-client>.
type memberEnv struct {
	t          *testing.T
	cl         pb.ClusterClient
	mt         pb.MaintenanceClient
	kv         pb.KVClient
	endpoint   string
	names      map[uint64]string
	ids        map[string]uint64
	selfPeer   []string
	selfClient []string
	log        []string
}

func newMemberEnv(t *testing.T, srv *framework.Server) *memberEnv {
	cli := srv.Client(t)
	conn := cli.ActiveConnection()
	m := &memberEnv{
		t: t, cl: pb.NewClusterClient(conn), mt: pb.NewMaintenanceClient(conn), kv: pb.NewKVClient(conn),
		names: map[uint64]string{}, ids: map[string]uint64{}, endpoint: srv.Endpoint,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := m.cl.MemberList(ctx, &pb.MemberListRequest{})
	if err != nil || len(l.Members) != 1 {
		t.Fatalf("MemberList: %v %v", l, err)
	}
	self := l.Members[0]
	m.name(self.ID, "self")
	m.selfPeer, m.selfClient = self.PeerURLs, self.ClientURLs
	return m
}

func (m *memberEnv) name(id uint64, n string) { m.names[id], m.ids[n] = n, id }

// id resolves a member name (or a literal number) to its id.
func (m *memberEnv) id(n string) uint64 {
	if id, ok := m.ids[n]; ok {
		return id
	}
	var id uint64
	if _, err := fmt.Sscan(n, &id); err != nil {
		m.t.Fatalf("no member named %q", n)
	}
	return id
}

func (m *memberEnv) member(x *pb.Member) string {
	id, ok := m.names[x.ID]
	if !ok {
		id = fmt.Sprint(x.ID)
	}
	peers := strings.Join(x.PeerURLs, ",")
	if slices.Equal(x.PeerURLs, m.selfPeer) {
		peers = "<self-peer>"
	}
	clients := strings.Join(x.ClientURLs, ",")
	if len(x.ClientURLs) > 0 && slices.Equal(x.ClientURLs, m.selfClient) {
		clients = "<self-client>"
	}
	return fmt.Sprintf("{%s name=%q peers=[%s] clients=[%s] learner=%v}", id, x.Name, peers, clients, x.IsLearner)
}

// members renders a member list. Both servers list members by id; the ids
// differ between them, so the rendering is sorted by name instead.
func (m *memberEnv) members(ms []*pb.Member) string {
	m.t.Helper()
	if !slices.IsSortedFunc(ms, func(a, b *pb.Member) int { return cmp.Compare(a.ID, b.ID) }) {
		m.t.Errorf("members are not sorted by id: %v", ms)
	}
	out := make([]string, len(ms))
	for i, x := range ms {
		out[i] = m.member(x)
	}
	slices.Sort(out)
	return strings.Join(out, "")
}

// header checks a Cluster service header: this member, and no revision.
func (m *memberEnv) header(h *pb.ResponseHeader) {
	m.t.Helper()
	if h == nil || h.MemberId != m.ids["self"] || h.ClusterId == 0 || h.RaftTerm == 0 || h.Revision != 0 {
		m.t.Errorf("header = %v, want member %x, a cluster id and term, no revision", h, m.ids["self"])
	}
}

func (m *memberEnv) record(label, out string, err error) {
	if err != nil {
		s := status.Convert(err)
		out = fmt.Sprintf("error code=%v message=%q", s.Code(), s.Message())
	}
	m.log = append(m.log, label+" -> "+out)
}

func (m *memberEnv) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

// add adds a member; on success it is called name.
func (m *memberEnv) add(name string, learner bool, urls ...string) {
	m.t.Helper()
	ctx, cancel := m.ctx()
	defer cancel()
	r, err := m.cl.MemberAdd(ctx, &pb.MemberAddRequest{PeerURLs: urls, IsLearner: learner})
	out := ""
	if err == nil {
		m.header(r.Header)
		m.name(r.Member.ID, name)
		out = "member " + m.member(r.Member) + " members " + m.members(r.Members)
	}
	m.record(fmt.Sprintf("MemberAdd(%s learner=%v %q)", name, learner, urls), out, err)
}

func (m *memberEnv) remove(name string) {
	m.t.Helper()
	ctx, cancel := m.ctx()
	defer cancel()
	r, err := m.cl.MemberRemove(ctx, &pb.MemberRemoveRequest{ID: m.id(name)})
	out := ""
	if err == nil {
		m.header(r.Header)
		out = m.members(r.Members)
	}
	m.record("MemberRemove("+name+")", out, err)
}

func (m *memberEnv) update(name string, urls ...string) {
	m.t.Helper()
	ctx, cancel := m.ctx()
	defer cancel()
	r, err := m.cl.MemberUpdate(ctx, &pb.MemberUpdateRequest{ID: m.id(name), PeerURLs: urls})
	out := ""
	if err == nil {
		m.header(r.Header)
		out = m.members(r.Members)
	}
	label := fmt.Sprintf("%q", urls)
	if slices.Equal(urls, m.selfPeer) {
		label = "<self-peer>"
	}
	m.record(fmt.Sprintf("MemberUpdate(%s %s)", name, label), out, err)
}

func (m *memberEnv) promote(name string) {
	m.t.Helper()
	ctx, cancel := m.ctx()
	defer cancel()
	r, err := m.cl.MemberPromote(ctx, &pb.MemberPromoteRequest{ID: m.id(name)})
	out := ""
	if err == nil {
		m.header(r.Header)
		out = m.members(r.Members)
	}
	m.record("MemberPromote("+name+")", out, err)
}

func (m *memberEnv) list(linearizable bool) {
	m.t.Helper()
	ctx, cancel := m.ctx()
	defer cancel()
	r, err := m.cl.MemberList(ctx, &pb.MemberListRequest{Linearizable: linearizable})
	out := ""
	if err == nil {
		m.header(r.Header)
		out = m.members(r.Members)
	}
	m.record(fmt.Sprintf("MemberList(linearizable=%v)", linearizable), out, err)
}

// memberScenario runs f against etcd and then metastore, each on a fresh
// server, and requires the same transcript.
func memberScenario(t *testing.T, f func(m *memberEnv)) {
	t.Helper()
	t.Parallel()
	var logs [][]string
	for _, b := range framework.Backends() {
		var log []string
		ok := t.Run(b.Name, func(t *testing.T) {
			m := newMemberEnv(t, b.Start(t, framework.Options{}))
			f(m)
			log = m.log
			if os.Getenv("METASTORE_CTL_DUMP") != "" {
				t.Logf("%s", strings.Join(log, "\n"))
			}
		})
		if !ok && b.Name == "etcd" {
			t.Fatalf("the scenario's expectations do not hold on etcd; fix the test before comparing metastore")
		}
		logs = append(logs, log)
	}
	if len(logs) == 2 {
		t.Run("same-transcript", func(t *testing.T) { compareLines(t, logs[0], logs[1]) })
	}
}

func compareLines(t *testing.T, etcd, metastore []string) {
	t.Helper()
	for i := range max(len(etcd), len(metastore)) {
		var e, g string
		if i < len(etcd) {
			e = etcd[i]
		}
		if i < len(metastore) {
			g = metastore[i]
		}
		if e != g {
			t.Errorf("step %d:\n  etcd      %s\n  metastore %s", i, e, g)
		}
	}
}

// TestMemberChanges: learners and voting members added, updated, promoted
// and removed on a one-member cluster, with every refusal etcd gives there
// (strict reconfiguration checks, learner rules, unknown and removed ids,
// peer URL conflicts, invalid URLs).
func TestMemberChanges(t *testing.T) {
	memberScenario(t, func(m *memberEnv) {
		m.list(true)
		m.add("L1", true, "http://10.0.0.9:2380")
		m.list(false)
		m.add("L2", true, "http://10.0.0.8:2380")                         // too many learners (max 1)
		m.add("L2", true, "http://10.0.0.8:2380", "http://10.0.0.9:2380") // a peer URL of L1
		for _, bad := range [][]string{nil, {"bad"}, {"http://10.0.0.1"}, {"http://10.0.0.1:2380/p"}, {"ftp://10.0.0.1:2380"}, {"http://10.0.0.2:2380", ":"}} {
			m.add("B", true, bad...)
			m.add("B", false, bad...)
		}
		m.promote("L1") // never started: not in sync
		m.promote("self")
		m.promote("12345")
		m.update("L1", "http://10.0.0.7:2380", "http://10.0.0.6:2380")
		m.update("L1", m.selfPeer...)
		m.update("12345", "http://10.0.0.5:2380")
		m.update("self", "x") // etcd does not check updated URLs
		m.list(true)
		m.update("self", m.selfPeer...)
		m.update("self", "http://10.0.0.6:2380") // L1's
		m.update("self", m.selfPeer...)
		m.remove("self") // the only voting member
		m.remove("12345")
		m.remove("L1")
		m.list(false)
		m.remove("L1")
		m.update("L1", "http://10.0.0.9:2380")
		m.promote("L1")
		// A learner again, with URLs given out of order and untrimmed.
		m.add("L3", true, " http://10.0.0.3:2380", "http://10.0.0.2:2380 ", "unix://sock")
		m.add("V", false, "http://10.0.0.3:2380") // L3's
		m.list(true)
		m.remove("L3")
		m.list(false)
	})
}

// TestMemberAddVoting: etcd lets a one-member cluster add a voting member
// (to grow it); the new member never starts, so further reconfiguration is
// refused for want of started members or quorum. etcd itself has lost its
// quorum until the member starts and no longer commits anything (a learner's
// removal would hang), while metastore, which has no peers, keeps serving;
// the scenario sticks to what is refused before it is proposed.
func TestMemberAddVoting(t *testing.T) {
	memberScenario(t, func(m *memberEnv) {
		m.add("L1", true, "http://10.0.0.9:2380")
		m.add("V1", false, "http://10.0.0.8:2380")
		m.list(false)
		m.add("V2", false, "http://10.0.0.7:2380")
		m.add("L2", true, "http://10.0.0.6:2380")
		m.remove("12345")
		m.remove("self")
		m.list(false)
	})
}

// TestMemberAddVotingThenLearner: after a voting member that never starts,
// even a learner is refused (the cluster is not connected to a quorum).
func TestMemberAddVotingThenLearner(t *testing.T) {
	memberScenario(t, func(m *memberEnv) {
		m.add("V1", false, "http://10.0.0.8:2380")
		m.add("L1", true, "http://10.0.0.9:2380")
		m.promote("V1")
		m.list(false)
	})
}

// TestDowngrade: validate, enable and cancel a downgrade on a one-member
// cluster; the cluster (and storage) version follows the downgrade target a
// monitor interval (4s on etcd) after enabling, but only once no member
// that never started (here a learner) is left, and returns after canceling.
func TestDowngrade(t *testing.T) {
	memberScenario(t, func(m *memberEnv) {
		dg := func(action pb.DowngradeRequest_DowngradeAction, v string) {
			m.t.Helper()
			ctx, cancel := m.ctx()
			defer cancel()
			r, err := m.mt.Downgrade(ctx, &pb.DowngradeRequest{Action: action, Version: v})
			out := ""
			if err == nil {
				if r.Header == nil || r.Header.MemberId != m.ids["self"] {
					m.t.Errorf("header = %v", r.Header)
				}
				out = fmt.Sprintf("version=%q revision=%d", r.Version, r.Header.GetRevision())
			}
			m.record(fmt.Sprintf("Downgrade(%v %q)", action, v), out, err)
		}
		// st records the status; right after canceling, the storage
		// version is left out (the version monitor may just have run on
		// either server).
		st := func(label string) *pb.StatusResponse {
			m.t.Helper()
			ctx, cancel := m.ctx()
			defer cancel()
			s, err := m.mt.Status(ctx, &pb.StatusRequest{})
			if err != nil {
				m.t.Fatalf("Status: %v", err)
			}
			storage := s.StorageVersion
			if label == "canceled" {
				storage = "-"
			}
			m.record("Status "+label, fmt.Sprintf("storage=%q downgrade=%v leader-is-self=%v", storage, s.DowngradeInfo, s.Leader == m.ids["self"]), nil)
			return s
		}
		waitStorage := func(want string) {
			m.t.Helper()
			deadline := time.Now().Add(20 * time.Second)
			for {
				ctx, cancel := m.ctx()
				s, err := m.mt.Status(ctx, &pb.StatusRequest{})
				cancel()
				if err == nil && s.StorageVersion == want {
					return
				}
				if time.Now().After(deadline) {
					m.t.Fatalf("storage version %q, want %q (err %v)", s.GetStorageVersion(), want, err)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		// versions records etcd's /version, without the server's own.
		versions := func(label string) {
			m.t.Helper()
			c := &http.Client{Timeout: 10 * time.Second}
			resp, err := c.Get("http://" + m.endpoint + "/version")
			if err != nil {
				m.t.Fatalf("GET /version: %v", err)
			}
			defer resp.Body.Close()
			var v map[string]string
			if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
				m.t.Fatalf("/version: %v", err)
			}
			m.record("/version "+label, fmt.Sprintf("etcdcluster=%q storage=%q", v["etcdcluster"], v["storage"]), nil)
		}
		V, E, C := pb.DowngradeRequest_VALIDATE, pb.DowngradeRequest_ENABLE, pb.DowngradeRequest_CANCEL
		// A new etcd member reports storage 3.5.0 until its version
		// monitor (every 4 s) has run once; the transcript starts after.
		waitStorage("3.6.0")
		versions("initial")
		st("initial")
		// While a learner exists the cluster version cannot move (the
		// learner never reports its version), so the answers up to its
		// removal do not depend on when the version monitor runs.
		m.add("L", true, "http://10.0.0.9:2380")
		dg(C, "")
		for _, v := range []string{"3.5", "3.5.7", "3.5.0-alpha.1+meta", "3.4", "3.6", "4.5", "x", "", "3", "3.5.x", "v3.5"} {
			dg(V, v)
		}
		dg(E, "3.4")
		dg(E, "x")
		dg(E, "3.5")
		st("enabled")
		dg(E, "3.5")
		dg(V, "3.5")
		dg(99, "3.5")
		time.Sleep(5 * time.Second) // a monitor interval
		st("enabled, with a learner")
		m.remove("L")
		waitStorage("3.5.0")
		st("downgraded")
		versions("downgraded")
		dg(V, "3.5")
		dg(V, "3.4")
		dg(C, "")
		st("canceled")
		waitStorage("3.6.0")
		st("upgraded")
		versions("upgraded")
		dg(C, "")
		dg(V, "3.5")
	})
}

// TestMemberClientErrors: through clientv3's member API, every refusal comes
// back as the very rpctypes value etcd gives (clients compare by identity),
// including etcd's not-enough-started error, which travels as code Unknown.
func TestMemberClientErrors(t *testing.T) {
	t.Parallel()
	for _, b := range framework.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			srv := b.Start(t, framework.Options{})
			cli := srv.Client(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			want := func(what string, err, w error) {
				t.Helper()
				if err != w { //nolint:errorlint // identity is the point
					t.Errorf("%s: err = %#v, want %#v (identical)", what, err, w)
				}
			}
			l, err := cli.MemberList(ctx)
			if err != nil {
				t.Fatal(err)
			}
			self := l.Members[0].ID
			add, err := cli.MemberAddAsLearner(ctx, []string{"http://10.0.0.9:2380"})
			if err != nil {
				t.Fatal(err)
			}
			if !add.Member.IsLearner || len(add.Members) != 2 {
				t.Errorf("MemberAddAsLearner = %v", add)
			}
			_, err = cli.MemberAddAsLearner(ctx, []string{"http://10.0.0.8:2380"})
			want("second learner", err, rpctypes.ErrTooManyLearners)
			_, err = cli.MemberAddAsLearner(ctx, []string{"http://10.0.0.7:2380", "http://10.0.0.9:2380"})
			want("peer URL taken", err, rpctypes.ErrPeerURLExist)
			_, err = cli.MemberPromote(ctx, add.Member.ID)
			want("promote unsynced learner", err, rpctypes.ErrMemberLearnerNotReady)
			_, err = cli.MemberPromote(ctx, self)
			want("promote voting member", err, rpctypes.ErrMemberNotLearner)
			_, err = cli.MemberPromote(ctx, 12345)
			want("promote unknown", err, rpctypes.ErrMemberNotFound)
			_, err = cli.MemberUpdate(ctx, 12345, []string{"http://10.0.0.1:2380"})
			want("update unknown", err, rpctypes.ErrMemberNotFound)
			_, err = cli.MemberRemove(ctx, self)
			want("remove the only voting member", err, rpctypes.ErrMemberNotEnoughStarted)
			if _, err := cli.MemberRemove(ctx, add.Member.ID); err != nil {
				t.Fatal(err)
			}
			_, err = cli.MemberRemove(ctx, add.Member.ID)
			want("remove removed", err, rpctypes.ErrMemberNotFound)
			_, err = cli.Downgrade(ctx, clientv3.DowngradeValidate, "3.4")
			want("downgrade to 3.4", err, rpctypes.ErrInvalidDowngradeTargetVersion)
			_, err = cli.Downgrade(ctx, clientv3.DowngradeValidate, "three")
			want("downgrade to three", err, rpctypes.ErrWrongDowngradeVersionFormat)
			if _, err := cli.Downgrade(ctx, clientv3.DowngradeEnable, "3.5"); err != nil {
				t.Fatal(err)
			}
			_, err = cli.Downgrade(ctx, clientv3.DowngradeEnable, "3.5")
			want("downgrade twice", err, rpctypes.ErrDowngradeInProcess)
			if _, err := cli.Downgrade(ctx, clientv3.DowngradeCancel, ""); err != nil {
				t.Fatal(err)
			}
		})
	}
}
