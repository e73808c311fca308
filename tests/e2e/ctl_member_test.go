package e2e

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/metastore-dev/metastore/tests/framework"
)

// memberCtl runs etcdctl member and downgrade commands. Member ids are the
// server's choice, so they are named in order of first appearance (the
// server's own member is <self>, the cluster <cluster>), in arguments and
// output alike; the server's own peer URL prints as <self-peer>. Members
// are listed by id, which differs between servers, so list lines (and the
// entries of ETCD_INITIAL_CLUSTER) are sorted.
type memberCtl struct {
	t        *testing.T
	endpoint string
	selfPeer string
	names    map[uint64]string
	log      []string
}

var (
	hexWord         = regexp.MustCompile(`\b[0-9a-f]{8,16}\b`)
	memberAddedRe   = regexp.MustCompile(`Member ([0-9a-f]+) added`)
	initialClusterR = regexp.MustCompile(`ETCD_INITIAL_CLUSTER="([^"]*)"`)
	// etcdctl prints member and cluster ids as %16x: shorter ids are
	// padded with spaces.
	paddedIDRe = regexp.MustCompile(`(Member|cluster) +`)
)

func newMemberCtl(t *testing.T, endpoint string) *memberCtl {
	c := &memberCtl{t: t, endpoint: endpoint, names: map[uint64]string{}}
	cli := framework.NewClient(t, endpoint)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatalf("MemberList: %v", err)
	}
	c.names[l.Members[0].ID] = "<self>"
	c.names[l.Header.ClusterId] = "<cluster>"
	c.selfPeer = l.Members[0].PeerURLs[0]
	return c
}

func (c *memberCtl) norm(s string) string {
	s = strings.ReplaceAll(s, c.selfPeer, "<self-peer>")
	return hexWord.ReplaceAllStringFunc(s, func(h string) string {
		v, err := strconv.ParseUint(h, 16, 64)
		if err != nil {
			return h
		}
		if n, ok := c.names[v]; ok {
			return n
		}
		n := fmt.Sprintf("<member-%d>", len(c.names)-1)
		c.names[v] = n
		return n
	})
}

// id returns the hex id of a named member.
func (c *memberCtl) id(name string) string {
	for id, n := range c.names {
		if n == name {
			return strconv.FormatUint(id, 16)
		}
	}
	c.t.Fatalf("no member %s", name)
	return ""
}

// run runs etcdctl; sorted sorts the output's lines (member lists).
func (c *memberCtl) run(sorted bool, args ...string) string {
	c.t.Helper()
	r := framework.Etcdctl(c.t, c.endpoint, "", args...)
	out := paddedIDRe.ReplaceAllString(normalizeOutput(r.Stdout, c.endpoint, nil), "$1 ")
	if m := memberAddedRe.FindStringSubmatch(out); m != nil {
		c.norm(m[0]) // name the new member before anything else in the output
	}
	out = initialClusterR.ReplaceAllStringFunc(out, func(m string) string {
		entries := strings.Split(initialClusterR.FindStringSubmatch(m)[1], ",")
		sort.Strings(entries)
		return `ETCD_INITIAL_CLUSTER="` + strings.Join(entries, ",") + `"`
	})
	out = c.norm(out)
	if sorted {
		lines := strings.Split(strings.TrimSuffix(normalizeWidths(out), "\n"), "\n")
		sort.Strings(lines)
		out = strings.Join(lines, "\n") + "\n"
	}
	errOut := c.norm(normalizeOutput(r.Stderr, c.endpoint, nil))
	c.log = append(c.log, fmt.Sprintf("$ etcdctl %s\n[exit %d]\n%s%s", c.norm(strings.Join(args, " ")), r.ExitCode, out, stderrBlock(errOut)))
	return r.Stdout
}

func compareCtlLogs(t *testing.T, logs [][]string) {
	t.Helper()
	if len(logs) < 2 {
		return
	}
	t.Run("same-output", func(t *testing.T) {
		for i := range max(len(logs[0]), len(logs[1])) {
			var e, m string
			if i < len(logs[0]) {
				e = logs[0][i]
			}
			if i < len(logs[1]) {
				m = logs[1][i]
			}
			if e != m {
				t.Errorf("step %d:\n--- etcd\n%s\n--- metastore\n%s", i, e, m)
			}
		}
	})
}

// TestEtcdctlMember: etcdctl member add (learner and voting), list, update,
// promote and remove, and downgrade validate/enable/cancel, with identical
// output on etcd and metastore (ids and the server's own peer URL named).
func TestEtcdctlMember(t *testing.T) {
	t.Parallel()
	var logs [][]string
	for _, b := range framework.Backends() {
		var log []string
		ok := t.Run(b.Name, func(t *testing.T) {
			srv := b.Start(t, framework.Options{})
			c := newMemberCtl(t, srv.Endpoint)
			c.run(true, "member", "list")
			c.run(false, "member", "add", "l1", "--peer-urls=http://10.0.0.9:2380", "--learner")
			c.run(true, "member", "list")
			c.run(true, "member", "list", "-w", "table")
			c.run(false, "member", "add", "l2", "--peer-urls=http://10.0.0.8:2380", "--learner")
			c.run(false, "member", "add", "l2", "--peer-urls=http://10.0.0.9:2380,http://10.0.0.8:2380", "--learner")
			c.run(false, "member", "add", "bad", "--peer-urls=bad")
			c.run(false, "member", "promote", c.id("<member-1>"))
			c.run(false, "member", "promote", c.id("<self>"))
			c.run(false, "member", "promote", "abc123")
			c.run(false, "member", "update", c.id("<member-1>"), "--peer-urls=http://10.0.0.7:2380")
			c.run(false, "member", "update", c.id("<member-1>"), "--peer-urls="+c.selfPeer)
			c.run(false, "member", "update", "abc123", "--peer-urls=http://10.0.0.7:2380")
			c.run(true, "member", "list", "--consistency", "s")

			// While the learner exists the cluster version cannot move (it
			// never reports its version), so the answers do not depend on
			// when the version monitor runs.
			c.run(false, "downgrade", "validate", "3.5")
			c.run(false, "downgrade", "validate", "3.4")
			c.run(false, "downgrade", "validate", "x")
			c.run(false, "downgrade", "cancel")
			c.run(false, "downgrade", "enable", "3.5")
			c.run(false, "downgrade", "enable", "3.5")
			c.run(false, "downgrade", "cancel")
			c.run(false, "downgrade", "validate", "3.5.1")

			c.run(false, "member", "remove", c.id("<self>"))
			c.run(false, "member", "remove", c.id("<member-1>"))
			c.run(false, "member", "remove", c.id("<member-1>"))
			c.run(true, "member", "list")

			// Last: etcd loses its quorum until a voting member it added
			// starts, and this one never does.
			c.run(false, "member", "add", "v1", "--peer-urls=http://10.0.0.5:2380")
			c.run(true, "member", "list", "--consistency", "s")
			c.run(false, "member", "add", "v2", "--peer-urls=http://10.0.0.4:2380")
			log = c.log
			if os.Getenv("METASTORE_CTL_DUMP") != "" {
				t.Logf("%s", strings.Join(log, "\n"))
			}
		})
		if !ok && b.Name == "etcd" {
			t.Fatalf("the scenario's expectations do not hold on etcd")
		}
		logs = append(logs, log)
	}
	compareCtlLogs(t, logs)
}

// TestMembersSurviveRestart: a learner, a changed peer URL, a removed member
// and an enabled downgrade survive SIGKILL and a restart: on the etcd
// binary first, then on metastore, with identical etcdctl output.
// (endpoint status -w json shows the downgrade info; the raft numbers, ids
// and sizes in it are normalised.)
func TestMembersSurviveRestart(t *testing.T) {
	t.Parallel()
	var logs [][]string
	for _, kind := range []string{"etcd", "metastore"} {
		if kind == "metastore" && framework.OnlyEtcd() {
			continue
		}
		var log []string
		ok := t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			var p *framework.Process
			if kind == "etcd" {
				p = framework.StartEtcdProcess(t, dir)
			} else {
				p = framework.StartMetastoreProcess(t, dir)
			}
			c := newMemberCtl(t, p.Endpoint)
			c.run(false, "member", "add", "gone", "--peer-urls=http://10.0.0.8:2380", "--learner")
			gone := c.id("<member-1>")
			c.run(false, "member", "remove", gone)
			c.run(false, "member", "add", "l1", "--peer-urls=http://10.0.0.9:2380", "--learner")
			c.run(false, "member", "update", c.id("<member-2>"), "--peer-urls=http://10.0.0.7:2380")
			c.run(false, "downgrade", "enable", "3.5")
			c.run(true, "member", "list")
			p.Kill()
			p.Restart()
			c.run(true, "member", "list")
			c.run(true, "member", "list", "-w", "table")
			c.run(false, "member", "remove", gone)
			c.run(false, "member", "add", "l2", "--peer-urls=http://10.0.0.6:2380", "--learner")
			c.run(false, "downgrade", "enable", "3.5")
			// The cluster version stays: a member that never started does not
			// report its version, and etcd moves the cluster version only
			// when every member has.
			c.run(false, "endpoint", "status", "-w", "json")
			c.run(false, "downgrade", "cancel")
			log = c.log
			if os.Getenv("METASTORE_CTL_DUMP") != "" {
				t.Logf("%s", strings.Join(log, "\n"))
			}
		})
		if !ok && kind == "etcd" {
			t.Fatalf("the scenario's expectations do not hold on etcd")
		}
		logs = append(logs, log)
	}
	compareCtlLogs(t, logs)
}
