package cluster

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metastore-dev/metastore/tests/framework"
)

// ctl runs etcdctl against a cluster and normalises its output: member ids
// by member name, the cluster id, client and peer ports by member, and the
// numbers that differ between servers and runs (versions, sizes, raft
// term and index, durations).
type ctl struct {
	t     *testing.T
	c     *Cluster
	names map[uint64]string
	ports map[string]string
	log   []string
}

var (
	hexWordRe  = regexp.MustCompile(`\b[0-9a-f]{12,16}\b`)
	tookRe     = regexp.MustCompile(`took = [0-9.]+[µnm]?s`)
	portRe     = regexp.MustCompile(`127\.0\.0\.1:[0-9]+`)
	memberIDRe = regexp.MustCompile(`Member +([0-9a-f]+) added`)
	clusterEnv = regexp.MustCompile(`ETCD_INITIAL_CLUSTER="([^"]*)"`)
	// etcdctl prints member and cluster ids as %16x: shorter ids are
	// padded with spaces.
	paddedRe = regexp.MustCompile(`(Member|cluster) +`)
)

func newCtl(t *testing.T, c *Cluster) *ctl {
	x := &ctl{t: t, c: c, names: map[uint64]string{}, ports: map[string]string{}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, m := range c.Members {
		x.learn(ctx, m)
	}
	return x
}

// learn records a running member's id and ports (and the cluster id).
func (x *ctl) learn(ctx context.Context, m *Member) {
	st, err := m.Status(ctx)
	if err != nil {
		x.t.Fatalf("%s: status: %v", m, err)
	}
	x.names[st.Header.MemberId] = "<" + m.Name + ">"
	x.names[st.Header.ClusterId] = "<cluster>"
	x.notePorts(m)
}

func (x *ctl) notePorts(m *Member) {
	x.ports[m.Endpoint] = "<client:" + m.Name + ">"
	x.ports[strings.TrimPrefix(m.PeerURL, "http://")] = "<peer:" + m.Name + ">"
}

func (x *ctl) norm(s string) string {
	s = portRe.ReplaceAllStringFunc(s, func(p string) string {
		if n, ok := x.ports[p]; ok {
			return n
		}
		return "<port>"
	})
	s = hexWordRe.ReplaceAllStringFunc(s, func(h string) string {
		v, err := strconv.ParseUint(h, 16, 64)
		if err != nil {
			return h
		}
		if n, ok := x.names[v]; ok {
			return n
		}
		return "<unknown-id>"
	})
	s = paddedRe.ReplaceAllString(s, "$1 ")
	return tookRe.ReplaceAllString(s, "took = <d>")
}

// table normalises a -w table output: the cells of the named columns
// become "*" and the rows are sorted (their order follows member ids).
func table(s string, masked ...string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	var header []string
	var rows []string
	for _, l := range lines {
		if !strings.HasPrefix(l, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(l, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if header == nil {
			header = cells
			continue
		}
		for i, h := range header {
			if i < len(cells) && slices.Contains(masked, h) {
				cells[i] = "*"
			}
		}
		rows = append(rows, strings.Join(cells, " | "))
	}
	slices.Sort(rows)
	return strings.Join(header, " | ") + "\n" + strings.Join(rows, "\n")
}

// run runs etcdctl with every running member as endpoint and records the
// normalised output under label; post, if set, transforms it further.
func (x *ctl) run(label string, post func(string) string, args ...string) framework.EtcdctlResult {
	x.t.Helper()
	return x.record(label, post, x.exec(args...), args...)
}

func (x *ctl) exec(args ...string) framework.EtcdctlResult {
	x.t.Helper()
	var eps []string
	for _, m := range x.c.Running() {
		eps = append(eps, m.Endpoint)
	}
	return framework.Etcdctl(x.t, strings.Join(eps, ","), "", args...)
}

func (x *ctl) record(label string, post func(string) string, res framework.EtcdctlResult, args ...string) framework.EtcdctlResult {
	out := x.norm(res.Stdout)
	if post != nil {
		out = post(out)
	}
	rec := fmt.Sprintf("$ etcdctl %s [%s]\nexit %d\n%s\n%s", x.norm(strings.Join(args, " ")), label, res.ExitCode, out, x.norm(errorLines(res.Stderr)))
	x.log = append(x.log, rec)
	return res
}

// runSettled is run for a membership change that etcd's
// --strict-reconfig-check (the default) refuses with "unhealthy cluster"
// until the member asked has been connected to a quorum for 5s (etcd's
// HealthInterval): it waits that out (30s at most), then records the
// answer.
func (x *ctl) runSettled(label string, post func(string) string, args ...string) framework.EtcdctlResult {
	x.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		res := x.exec(args...)
		if res.ExitCode == 0 || !strings.Contains(res.Stderr, "etcdserver: unhealthy cluster") || time.Now().After(deadline) {
			return x.record(label, post, res, args...)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// errorLines drops clientv3's JSON log lines (timestamps, connection
// addresses) from etcdctl's standard error, keeping its message.
func errorLines(s string) string {
	var keep []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if !strings.HasPrefix(l, `{"level"`) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

func sortLines(s string) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	slices.Sort(ls)
	return strings.Join(ls, "\n")
}

// TestEtcdctlCluster runs etcdctl's cluster commands against a 3-member
// etcd and a 3-member metastore and requires the same normalised output:
// member list, endpoint status and health with --cluster, move-leader to a
// follower, member add --learner (the new member then started with
// --initial-cluster-state existing), promote (of a voter: etcd's error; of
// the learner once in sync), member remove of the promoted member, which
// then stops.
func TestEtcdctlCluster(t *testing.T) {
	var want []string
	for _, kind := range Kinds() {
		t.Run(kind, func(t *testing.T) {
			got := etcdctlCluster(t, kind)
			if want == nil {
				want = got
				return
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("etcdctl output differs from etcd's (-etcd +%s):\n%s", kind, d)
			}
		})
	}
}

func etcdctlCluster(t *testing.T, kind string) []string {
	c := Start(t, Config{Kind: kind})
	x := newCtl(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	statusCols := []string{"VERSION", "STORAGE VERSION", "DB SIZE", "IN USE", "PERCENTAGE NOT IN USE", "RAFT TERM", "RAFT INDEX", "RAFT APPLIED INDEX"}
	status := func(s string) string { return table(s, statusCols...) }
	mustOK := func(res framework.EtcdctlResult, what string) {
		t.Helper()
		if res.ExitCode != 0 {
			t.Fatalf("etcdctl %s: exit %d: %s%s", what, res.ExitCode, res.Stdout, res.Stderr)
		}
	}

	// Make m0 the leader first (unrecorded), so the transcripts name the
	// same leader whatever the election chose.
	moveLeader := func(to *Member) framework.EtcdctlResult {
		st, err := to.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return x.exec("move-leader", strconv.FormatUint(st.Header.MemberId, 16))
	}
	if l, err := c.WaitLeader(30 * time.Second); err != nil {
		t.Fatal(err)
	} else if l != c.Members[0] {
		mustOK(moveLeader(c.Members[0]), "move-leader to m0")
		if nl, err := c.WaitLeader(30 * time.Second); err != nil || nl != c.Members[0] {
			t.Fatalf("after move-leader to m0 the leader is %v (%v)", nl, err)
		}
	}
	mustOK(x.run("three members", func(s string) string { return table(s) }, "member", "list", "-w", "table"), "member list")
	mustOK(x.run("", status, "endpoint", "status", "--cluster", "-w", "table"), "endpoint status")
	mustOK(x.run("", sortLines, "endpoint", "health", "--cluster"), "endpoint health")
	mustOK(x.run("", func(s string) string { return table(s, "TOOK") }, "endpoint", "health", "--cluster", "-w", "table"), "endpoint health")

	// move-leader to a follower; the leader changes to it.
	target := c.Members[1]
	st, err := target.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustOK(x.run("to a follower", nil, "move-leader", strconv.FormatUint(st.Header.MemberId, 16)), "move-leader")
	if nl, err := c.WaitLeader(30 * time.Second); err != nil || nl != target {
		t.Fatalf("after move-leader to %s the leader is %v (%v)", target, nl, err)
	}
	x.run("to the leader itself", nil, "move-leader", strconv.FormatUint(st.Header.MemberId, 16))
	x.run("to an unknown id", nil, "move-leader", "1234abcd")
	mustOK(x.run("after move-leader", status, "endpoint", "status", "--cluster", "-w", "table"), "endpoint status")

	// A learner joins, is promoted, removed.
	peer := c.NewMemberURLs("m3")
	x.ports[strings.TrimPrefix(peer, "http://")] = "<peer:m3>"
	// With --strict-reconfig-check (the default) a member is added only
	// once the one asked has been connected to a quorum for 5s (etcd's
	// HealthInterval): until then "unhealthy cluster".
	var res framework.EtcdctlResult
	for deadline := time.Now().Add(30 * time.Second); ; {
		res = framework.Etcdctl(t, strings.Join(c.Endpoints(), ","), "", "member", "add", "m3", "--peer-urls="+peer, "--learner")
		if res.ExitCode == 0 || !strings.Contains(res.Stderr, "etcdserver: unhealthy cluster") || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	mustOK(res, "member add")
	mid := memberIDRe.FindStringSubmatch(res.Stdout)
	env := clusterEnv.FindStringSubmatch(res.Stdout)
	if mid == nil || env == nil {
		t.Fatalf("member add printed %q", res.Stdout)
	}
	id, _ := strconv.ParseUint(mid[1], 16, 64)
	x.names[id] = "<m3>"
	x.log = append(x.log, fmt.Sprintf("$ etcdctl member add m3 --peer-urls=<peer:m3> --learner\nexit 0\n%s\n", x.norm(sortEnv(res.Stdout))))
	x.run("learner not started", func(s string) string { return table(s) }, "member", "list", "-w", "table")
	m3 := c.AddMember("m3", env[1])
	x.notePorts(m3)
	m3.Restart()
	x.run("a voter", nil, "member", "promote", strconv.FormatUint(st.Header.MemberId, 16))
	// Promotion succeeds once the learner has caught up with the leader.
	deadline := time.Now().Add(60 * time.Second)
	for {
		res := framework.Etcdctl(t, strings.Join(c.Endpoints(), ","), "", "member", "promote", mid[1])
		if res.ExitCode == 0 {
			x.log = append(x.log, "$ etcdctl member promote <m3> [the learner, in sync]\n"+x.norm(res.Stdout))
			break
		}
		if !strings.Contains(res.Stderr, "can only promote a learner member which is in sync with leader") || time.Now().After(deadline) {
			t.Fatalf("member promote of the started learner: exit %d: %s", res.ExitCode, res.Stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	mustOK(x.run("four voters", func(s string) string { return table(s) }, "member", "list", "-w", "table"), "member list")
	if err := c.WaitHealthy(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	mustOK(x.run("four members", status, "endpoint", "status", "--cluster", "-w", "table"), "endpoint status")
	mustOK(x.runSettled("promoted", nil, "member", "remove", mid[1]), "member remove")
	// A removed member stops.
	select {
	case <-m3.Exited():
	case <-time.After(60 * time.Second):
		t.Fatalf("%s still runs 60s after its removal", m3)
	}
	c.Members = c.Members[:3]
	x.run("removed again", nil, "member", "remove", mid[1])
	mustOK(x.run("after removal", func(s string) string { return table(s) }, "member", "list", "-w", "table"), "member list")
	mustOK(x.run("after removal", sortLines, "endpoint", "health", "--cluster"), "endpoint health")
	c.CheckRaces(t)
	if testing.Verbose() {
		t.Logf("%s transcript:\n%s", kind, strings.Join(x.log, "\n"))
	}
	return x.log
}

// sortEnv sorts the entries of ETCD_INITIAL_CLUSTER (their order follows
// member ids).
func sortEnv(s string) string {
	return clusterEnv.ReplaceAllStringFunc(s, func(m string) string {
		v := clusterEnv.FindStringSubmatch(m)[1]
		parts := strings.Split(v, ",")
		slices.Sort(parts)
		return `ETCD_INITIAL_CLUSTER="` + strings.Join(parts, ",") + `"`
	})
}
