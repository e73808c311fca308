package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/metastore-dev/metastore/tests/framework"
)

// ctlWatchEnv runs one backend's side of an etcdctl watch scenario: watch
// commands in the background, other commands to completion, and a record of
// every output for the comparison between etcd and metastore.
type ctlWatchEnv struct {
	t       *testing.T
	backend string
	srv     *framework.Server
	log     []string
}

func (c *ctlWatchEnv) record(what, out string) {
	c.log = append(c.log, what+"\n"+normalizeOutput(out, c.srv.Endpoint, nil))
}

// run runs etcdctl to completion.
func (c *ctlWatchEnv) run(args ...string) { c.t.Helper(); c.runIn("", args...) }

// runIn runs etcdctl to completion with stdin.
func (c *ctlWatchEnv) runIn(stdin string, args ...string) {
	c.t.Helper()
	r := framework.Etcdctl(c.t, c.srv.Endpoint, stdin, args...)
	c.record(fmt.Sprintf("$ etcdctl %s [exit %d]", strings.Join(args, " "), r.ExitCode), r.Stdout+r.Stderr)
}

// ctlWatch is an etcdctl watch running in the background.
type ctlWatch struct {
	c    *ctlWatchEnv
	name string
	p    *framework.CtlProcess
}

func (c *ctlWatchEnv) watch(name string, args ...string) *ctlWatch {
	return &ctlWatch{c: c, name: name, p: framework.StartEtcdctl(c.t, c.srv.Endpoint, append([]string{"watch"}, args...)...)}
}

// want waits until the watch has printed exactly out in total.
func (w *ctlWatch) want(out string) {
	w.c.t.Helper()
	if !w.p.WaitStdout(func(s string) bool { return s == out }, 20*time.Second) {
		w.c.t.Errorf("watch %s printed\n%s\n[stderr] %s\nwant\n%s", w.name, w.p.Stdout(), w.p.Stderr(), out)
	}
}

// waitLines waits until the watch has printed n lines and records them.
func (w *ctlWatch) waitLines(n int) {
	w.c.t.Helper()
	if !w.p.WaitStdout(func(s string) bool { return strings.Count(s, "\n") >= n }, 20*time.Second) {
		w.c.t.Errorf("watch %s printed\n%s\n[stderr] %s\nwant %d lines", w.name, w.p.Stdout(), w.p.Stderr(), n)
	}
	lines := strings.SplitAfter(w.p.Stdout(), "\n")
	w.c.record("watch "+w.name+" output", strings.Join(lines[:min(n, len(lines))], ""))
}

// stop kills the watch and records what it printed.
func (w *ctlWatch) stop() {
	w.p.Kill()
	w.c.record("watch "+w.name+" (killed)", w.p.Stdout())
	w.c.record("watch "+w.name+" stderr", w.p.Stderr())
}

// kill kills the watch without recording its output (which depends on
// timing).
func (w *ctlWatch) kill() { w.p.Kill() }

// exit waits for the watch to end on its own and records its output and
// exit code.
func (w *ctlWatch) exit() {
	w.c.t.Helper()
	r, ok := w.p.Wait(20 * time.Second)
	if !ok {
		w.c.t.Errorf("watch %s did not exit", w.name)
	}
	w.c.record(fmt.Sprintf("watch %s [exit %d]", w.name, r.ExitCode), r.Stdout)
	w.c.record("watch "+w.name+" stderr", r.Stderr)
}

// ctlWatchScenario runs f against etcd, then metastore, and requires the
// same recorded outputs.
func ctlWatchScenario(t *testing.T, o framework.Options, f func(c *ctlWatchEnv)) {
	t.Helper()
	t.Parallel()
	var logs [][]string
	for _, b := range framework.Backends() {
		var log []string
		ok := t.Run(b.Name, func(t *testing.T) {
			c := &ctlWatchEnv{t: t, backend: b.Name, srv: b.Start(t, o)}
			f(c)
			log = c.log
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

func TestEtcdctlWatch(t *testing.T) {
	ctlWatchScenario(t, framework.Options{}, func(c *ctlWatchEnv) {
		c.run("put", "foo", "1") // 2
		key := c.watch("key", "foo")
		prefix := c.watch("prefix", "--prefix", "f", "--prev-kv")
		rng := c.watch("range", "a", "g", "-w", "json")
		time.Sleep(500 * time.Millisecond) // etcdctl prints nothing once the watch is set up
		c.run("put", "foo", "2")           // 3
		c.run("put", "fab", "x")           // 4
		c.run("del", "foo")                // 5
		c.run("put", "zoo", "outside")     // 6
		// a txn's events arrive in one response
		c.runIn("\nput fa 1\nput fb 2\n\n\n", "txn") // 7
		key.want("PUT\nfoo\n2\nDELETE\nfoo\n\n")
		prefix.want("PUT\nfoo\n1\nfoo\n2\nPUT\nfab\nx\nDELETE\nfoo\n2\nfoo\n\nPUT\nfa\n1\nPUT\nfb\n2\n")
		rng.waitLines(4) // one JSON response per line
		key.stop()
		prefix.stop()
		rng.stop()

		// History from a revision.
		hist := c.watch("history", "--rev", "2", "--prefix", "f")
		hist.want("PUT\nfoo\n1\nPUT\nfoo\n2\nPUT\nfab\nx\nDELETE\nfoo\n\nPUT\nfa\n1\nPUT\nfb\n2\n")
		hist.stop()
		hist = c.watch("history-json", "--rev", "3", "foo", "-w", "json")
		hist.waitLines(1)
		hist.stop()
	})
}

func TestEtcdctlWatchInteractive(t *testing.T) {
	ctlWatchScenario(t, framework.Options{}, func(c *ctlWatchEnv) {
		w := c.watch("interactive", "-i")
		w.p.Write("watch foo\n")
		w.p.Write("watch bar --prev-kv\n")
		w.p.Write("nonsense\n")
		time.Sleep(500 * time.Millisecond)
		c.run("put", "foo", "1") // 2
		w.want("PUT\nfoo\n1\n")
		c.run("put", "bar", "1") // 3
		w.want("PUT\nfoo\n1\nPUT\nbar\n1\n")
		// progress goes to every watch of the stream
		w.p.Write("progress\n")
		w.want("PUT\nfoo\n1\nPUT\nbar\n1\nprogress notify: 3\nprogress notify: 3\n")
		w.stop()
	})
}

func TestEtcdctlWatchProgressNotify(t *testing.T) {
	ctlWatchScenario(t, framework.Options{WatchProgressNotifyInterval: 300 * time.Millisecond}, func(c *ctlWatchEnv) {
		c.run("put", "other", "1") // 2
		w := c.watch("progress", "--progress-notify", "foo")
		w.waitLines(1)
		c.run("put", "foo", "1") // 3
		w.p.WaitStdout(func(s string) bool { return strings.Contains(s, "progress notify: 3\n") }, 20*time.Second)
		out := w.p.Stdout()
		i := strings.Index(out, "PUT\n")
		c.record("event then progress", out[i:strings.Index(out, "progress notify: 3\n")+len("progress notify: 3\n")])
		w.kill()
	})
}

func TestEtcdctlWatchCompacted(t *testing.T) {
	ctlWatchScenario(t, framework.Options{}, func(c *ctlWatchEnv) {
		for i := range 4 {
			c.run("put", "foo", fmt.Sprint(i)) // 2..5
		}
		c.run("compact", "4")
		w := c.watch("compacted", "--rev", "2", "foo")
		w.exit()
		// at the compacted revision: the first event's previous value is gone
		w = c.watch("at-compacted", "--rev", "4", "foo", "--prev-kv")
		w.want("PUT\nfoo\n2\nPUT\nfoo\n2\nfoo\n3\n")
		w.stop()
	})
}
