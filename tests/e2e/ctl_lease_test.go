package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/metastore-dev/metastore/tests/framework"
)

// ctlSession runs etcdctl commands whose arguments depend on earlier output
// (lease ids the server chose). Lease ids are rewritten to <lease-N> in
// order of first appearance, in arguments and output alike, so the
// transcripts of etcd and metastore compare.
type ctlSession struct {
	t        *testing.T
	endpoint string
	ids      map[string]string
	log      []string
}

var (
	// etcdctl prints lease ids as %016x, but `elect` keys as %x.
	hexID = regexp.MustCompile(`\b[0-9a-f]{10,16}\b`)
	decID = regexp.MustCompile(`-?\b[0-9]{6,}\b`)
)

// norm names every lease id in s, written in hex (simple output, with or
// without leading zeros) or in decimal (json and fields output).
func (c *ctlSession) norm(s string) string {
	s = hexID.ReplaceAllStringFunc(s, func(h string) string {
		v, err := strconv.ParseUint(h, 16, 64)
		if err != nil {
			return h
		}
		id := fmt.Sprintf("%016x", v)
		if n, ok := c.ids[id]; ok {
			return n
		}
		n := fmt.Sprintf("<lease-%d>", len(c.ids)/2+1)
		c.ids[id] = n
		c.ids[strconv.FormatInt(int64(v), 10)] = n
		return n
	})
	return decID.ReplaceAllStringFunc(s, func(d string) string {
		if n, ok := c.ids[d]; ok {
			return n
		}
		return d
	})
}

var (
	remainingRe    = regexp.MustCompile(`remaining\((\d+)s\)`)
	fieldsTTLRe    = regexp.MustCompile(`("TTL" : |"ttl":)[0-9]+`)
	attachedKeysRe = regexp.MustCompile(`attached keys\(\[([^]]*)\]\)`)
)

// run runs etcdctl and returns its stdout; the normalised command, exit code,
// stdout and stderr go to the transcript.
func (c *ctlSession) run(args ...string) string {
	c.t.Helper()
	r := framework.Etcdctl(c.t, c.endpoint, "", args...)
	out := normalizeOutput(r.Stdout, c.endpoint, nil)
	errOut := normalizeOutput(r.Stderr, c.endpoint, nil)
	// etcd truncates the remaining time: within a few seconds of a grant it
	// reads TTL-1 or less depending on timing. etcd lists attached keys in
	// map order.
	rec := remainingRe.ReplaceAllString(out, "remaining(<n>s)")
	rec = fieldsTTLRe.ReplaceAllString(rec, "$1<n>")
	rec = attachedKeysRe.ReplaceAllStringFunc(rec, func(m string) string {
		keys := strings.Fields(attachedKeysRe.FindStringSubmatch(m)[1])
		sort.Strings(keys)
		return "attached keys([" + strings.Join(keys, " ") + "])"
	})
	c.log = append(c.log, fmt.Sprintf("$ etcdctl %s\n[exit %d]\n%s%s",
		c.norm(strings.Join(args, " ")), r.ExitCode, c.norm(rec), stderrBlock(c.norm(errOut))))
	return r.Stdout
}

// grant runs `lease grant ttl` and returns the lease id (hex).
func (c *ctlSession) grant(ttl string) string {
	c.t.Helper()
	out := c.run("lease", "grant", ttl)
	id := hexID.FindString(out)
	if id == "" {
		c.t.Fatalf("lease grant %s printed %q", ttl, out)
	}
	return id
}

func ctlSessionScenario(t *testing.T, f func(c *ctlSession)) {
	t.Helper()
	t.Parallel()
	var logs [][]string
	for _, b := range framework.Backends() {
		var log []string
		ok := t.Run(b.Name, func(t *testing.T) {
			srv := b.Start(t, framework.Options{})
			c := &ctlSession{t: t, endpoint: srv.Endpoint, ids: map[string]string{}}
			f(c)
			log = c.log
			if os.Getenv("METASTORE_CTL_DUMP") != "" {
				t.Logf("%s", strings.Join(log, "\n"))
			}
		})
		if !ok && b.Name == "etcd" {
			t.Fatalf("the scenario's expectations do not hold on etcd; fix the test before comparing metastore")
		}
		logs = append(logs, log)
	}
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

func TestEtcdctlLease(t *testing.T) {
	ctlSessionScenario(t, func(c *ctlSession) {
		want := func(got, want string) {
			c.t.Helper()
			if got != want {
				c.t.Errorf("got %q, want %q", got, want)
			}
		}
		id := c.grant("60")
		long := c.grant("600")
		want(c.run("put", "--lease="+id, "k1", "v1"), "OK\n")
		want(c.run("put", "--lease="+id, "k2", "v2"), "OK\n")
		want(c.run("put", "--lease="+long, "k3", "v3"), "OK\n")
		c.run("lease", "timetolive", id)
		c.run("lease", "timetolive", "--keys", id)
		c.run("lease", "timetolive", "--keys", long)
		c.run("lease", "timetolive", "--keys", long, "-w", "fields")
		want(c.run("lease", "list"), fmt.Sprintf("found 2 leases\n%s\n%s\n", id, long))
		c.run("lease", "list", "-w", "json")
		want(c.run("lease", "keep-alive", "--once", id), fmt.Sprintf("lease %s keepalived with TTL(60)\n", id))
		c.run("lease", "keep-alive", "--once", id, "-w", "json")
		want(c.run("lease", "revoke", id), fmt.Sprintf("lease %s revoked\n", id))
		want(c.run("get", "--prefix", "k"), "k3\nv3\n")
		c.run("lease", "timetolive", id)
		c.run("lease", "timetolive", "--keys", id, "-w", "json")
		c.run("lease", "revoke", id)
		c.run("lease", "keep-alive", "--once", id)
		c.run("put", "--lease=1234", "x", "y")
		c.run("lease", "grant", "9000000001")
		c.run("lease", "revoke", long)
		c.run("lease", "list")
		// Below the 2s minimum: raised. (Not looked at again: under load
		// it may expire before the next command.)
		want(c.run("lease", "grant", "1")[len("lease 0123456789abcdef"):], " granted with TTL(2s)\n")
	})
}

func TestEtcdctlLeaseExpiry(t *testing.T) {
	ctlSessionScenario(t, func(c *ctlSession) {
		id := c.grant("2")
		c.run("put", "--lease="+id, "e", "1")
		deadline := time.Now().Add(15 * time.Second)
		for {
			out := framework.Etcdctl(c.t, c.endpoint, "", "get", "e").Stdout
			if out == "" {
				break
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("key of a 2s lease still there after 15s")
			}
			time.Sleep(200 * time.Millisecond)
		}
		c.run("lease", "timetolive", id)
		c.run("lease", "list")
	})
}

func TestEtcdctlLock(t *testing.T) {
	ctlSessionScenario(t, func(c *ctlSession) {
		// lock with a command runs it while holding the lock and releases
		// the lock (revoking its session's lease) afterwards.
		c.run("lock", "mylock", "--", "sh", "-c", `echo "held $ETCD_LOCK_KEY"`)
		c.run("get", "--prefix", "mylock")
		c.run("lease", "list")
		c.run("lock", "--ttl", "5", "mylock", "true")
		c.run("get", "--prefix", "mylock")
	})
}

// TestEtcdctlElect campaigns with `etcdctl elect` (which holds leadership
// until interrupted), checks the leader key is attached to the campaign's
// session lease, then interrupts it: it resigns and revokes its session.
func TestEtcdctlElect(t *testing.T) {
	ctlSessionScenario(t, func(c *ctlSession) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, framework.EtcdctlBinary(c.t), "--endpoints="+c.endpoint, "elect", "myelection", "proposal-1")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			c.t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			c.t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		var got []string
		for len(got) < 2 && sc.Scan() { // the leader key, then its value
			got = append(got, c.norm(sc.Text()))
		}
		c.log = append(c.log, "$ etcdctl elect myelection proposal-1 (running)\n"+strings.Join(got, "\n"))
		if len(got) != 2 || !strings.HasPrefix(got[0], "myelection/") || got[1] != "proposal-1" {
			c.t.Fatalf("elect printed %q", got)
		}
		c.run("get", "--prefix", "myelection/", "--print-value-only")
		c.run("lease", "list")
		out := c.run("get", "--prefix", "myelection/", "-w", "fields")
		if !strings.Contains(out, `"Lease" : `) || strings.Contains(out, `"Lease" : 0`) {
			c.t.Errorf("leader key not attached to a lease:\n%s", out)
		}
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			c.t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			c.t.Fatalf("elect after SIGINT: %v", err)
		}
		c.run("get", "--prefix", "myelection/")
	})
}

// TestEtcdctlLeaseKeepAliveStream runs `etcdctl lease keep-alive` (one
// stream, renewing every third of the TTL) past the lease's TTL, then
// interrupts it; the lease and its key outlived the TTL.
func TestEtcdctlLeaseKeepAliveStream(t *testing.T) {
	ctlSessionScenario(t, func(c *ctlSession) {
		id := c.grant("2")
		c.run("put", "--lease="+id, "kept", "1")
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, framework.EtcdctlBinary(c.t), "--endpoints="+c.endpoint, "lease", "keep-alive", id)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			c.t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			c.t.Fatal(err)
		}
		lines := make(chan string, 100)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		n := 0
		var first string
		for deadline := time.After(3500 * time.Millisecond); n >= 0; {
			select {
			case l, ok := <-lines:
				if !ok {
					c.t.Fatalf("etcdctl lease keep-alive ended after %d lines", n)
				}
				if n == 0 {
					first = c.norm(l)
				}
				n++
			case <-deadline:
				if n < 3 {
					c.t.Fatalf("only %d keep-alives in 3.5s", n)
				}
				n = -1
			}
		}
		c.log = append(c.log, "$ etcdctl lease keep-alive "+c.norm(id)+" (first line)\n"+first)
		c.run("get", "kept")
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait()
	})
}
