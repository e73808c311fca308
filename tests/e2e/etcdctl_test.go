package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/metastore-dev/metastore/tests/framework"
)

// step is one etcdctl invocation of a scenario.
type step struct {
	args  []string
	stdin string
	// want, if set, is the exact (normalised) stdout etcd must print: a
	// check that the scenario does what it says, before comparing.
	want *string
	// norm, if set, normalises stdout and stderr further (e.g. timings).
	norm func(string) string
}

func s(args ...string) step { return step{args: args} }

func (st step) expect(out string) step { st.want = &out; return st }
func (st step) with(f func(string) string) step {
	st.norm = f
	return st
}
func (st step) input(in string) step { st.stdin = in; return st }

type ctlResult struct {
	stdout, stderr string
	code           int
}

// ctlScenario runs steps with etcdctl against a fresh etcd and a fresh
// metastore (in-process) and requires identical normalised stdout, stderr
// and exit code for every step.
func ctlScenario(t *testing.T, steps []step) {
	t.Helper()
	t.Parallel()
	var runs [][]ctlResult
	for _, b := range framework.Backends() {
		var res []ctlResult
		ok := t.Run(b.Name, func(t *testing.T) {
			srv := b.Start(t, framework.Options{})
			for _, st := range steps {
				r := framework.Etcdctl(t, srv.Endpoint, st.stdin, st.args...)
				cr := ctlResult{
					stdout: normalizeOutput(r.Stdout, srv.Endpoint, st.norm),
					stderr: normalizeOutput(r.Stderr, srv.Endpoint, st.norm),
					code:   r.ExitCode,
				}
				res = append(res, cr)
				if os.Getenv("METASTORE_CTL_DUMP") != "" {
					t.Logf("$ etcdctl %s\n[exit %d]\n%s%s", argString(st), cr.code, cr.stdout, stderrBlock(cr.stderr))
				}
				if b.Name == "etcd" && st.want != nil && cr.stdout != *st.want {
					t.Errorf("etcdctl %s: etcd printed\n%s\nthe test expects\n%s", argString(st), cr.stdout, *st.want)
				}
			}
		})
		if !ok && b.Name == "etcd" {
			t.Fatalf("the scenario's expectations do not hold on etcd; fix the test before comparing metastore")
		}
		runs = append(runs, res)
	}
	if len(runs) < 2 {
		return
	}
	t.Run("same-output", func(t *testing.T) {
		for i, st := range steps {
			if i >= len(runs[1]) {
				t.Fatalf("metastore run stopped before step %d", i)
			}
			e, m := runs[0][i], runs[1][i]
			if e != m {
				t.Errorf("etcdctl %s:\n--- etcd (exit %d)\n%s%s\n--- metastore (exit %d)\n%s%s",
					argString(st), e.code, e.stdout, stderrBlock(e.stderr), m.code, m.stdout, stderrBlock(m.stderr))
			}
		}
	})
}

func argString(st step) string {
	q := make([]string, len(st.args))
	for i, a := range st.args {
		q[i] = a
		if strings.ContainsAny(a, " \t\n\"'") || a == "" {
			q[i] = fmt.Sprintf("%q", a)
		}
	}
	s := strings.Join(q, " ")
	if st.stdin != "" {
		s += fmt.Sprintf(" <<< %q", st.stdin)
	}
	return s
}

func stderrBlock(s string) string {
	if s == "" {
		return ""
	}
	return "[stderr] " + s
}

// identity and size fields that legitimately differ between two servers.
var variableJSONKeys = map[string]bool{
	"cluster_id": true, "member_id": true, "raft_term": true, // headers
	"ID": true, "leader": true, "raftIndex": true, "raftTerm": true, "raftAppliedIndex": true, // status, members
	"dbSize": true, "dbSizeInUse": true, "storageVersion": true, "peerURLs": true,
	"took": true,
}

var (
	clientLogLine = regexp.MustCompile(`(?m)^\{"level":.*\n`)
	fieldsIDs     = regexp.MustCompile(`(?m)^"(ClusterID|MemberID|RaftTerm)" : [0-9]+$`)
)

func normalizeOutput(out, endpoint string, extra func(string) string) string {
	out = strings.ReplaceAll(out, endpoint, "<endpoint>")
	// etcdctl's client logs each failed attempt as a JSON line with
	// timestamps and local ports; the error itself follows as "Error: ...".
	out = clientLogLine.ReplaceAllString(out, "")
	out = fieldsIDs.ReplaceAllString(out, `"$1" : <id>`)
	if extra != nil {
		out = extra(out)
	}
	trimmed := strings.TrimSpace(out)
	if strings.HasPrefix(trimmed, "{") || strings.HasPrefix(trimmed, "[") {
		if n, ok := normalizeJSON(trimmed); ok {
			return n + "\n"
		}
	}
	return out
}

// normalizeJSON replaces the values of variableJSONKeys (at any depth) with
// a placeholder and re-encodes with sorted keys. Numbers are kept exact.
func normalizeJSON(s string) (string, bool) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var out []string
	for dec.More() {
		var v any
		if err := dec.Decode(&v); err != nil {
			return "", false
		}
		v = walkJSON(v)
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			return "", false
		}
		out = append(out, strings.TrimSpace(buf.String()))
	}
	return strings.Join(out, "\n"), true
}

func walkJSON(v any) any {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		_, isStatus := x["dbSize"]
		for _, k := range keys {
			if variableJSONKeys[k] || (isStatus && k == "version") {
				x[k] = "<" + k + ">"
				continue
			}
			x[k] = walkJSON(x[k])
		}
		return x
	case []any:
		for i := range x {
			x[i] = walkJSON(x[i])
		}
		return x
	}
	return v
}

// Normalisers for the simple and table formats of the cluster commands.

var tookRe = regexp.MustCompile(`took = [0-9.]+[µnm]?s`)

// statusVarCols are the columns of `endpoint status` (simple and table)
// that vary between servers: ID, VERSION, STORAGE VERSION, DB SIZE, IN USE,
// PERCENTAGE NOT IN USE, RAFT TERM, RAFT INDEX, RAFT APPLIED INDEX.
var statusVarCols = []int{1, 2, 3, 4, 5, 6, 10, 11, 12}

func normStatusSimple(s string) string {
	var lines []string
	for _, line := range strings.Split(s, "\n") {
		f := strings.Split(line, ", ")
		if len(f) >= 13 {
			for _, c := range statusVarCols {
				f[c] = "<var>"
			}
		}
		lines = append(lines, strings.Join(f, ", "))
	}
	return strings.Join(lines, "\n")
}

// normTable normalises the given (0-based) columns of an ASCII table.
func normTable(cols ...int) func(string) string {
	return func(s string) string {
		var lines []string
		for _, line := range strings.Split(s, "\n") {
			if !strings.HasPrefix(line, "|") || strings.Contains(line, "ENDPOINT") || strings.Contains(line, " ID ") {
				lines = append(lines, line)
				continue
			}
			f := strings.Split(line, "|")
			for _, c := range cols {
				if c+1 < len(f)-1 {
					f[c+1] = " <var> "
				}
			}
			lines = append(lines, strings.Join(f, "|"))
		}
		return normalizeWidths(strings.Join(lines, "\n"))
	}
}

// normalizeWidths collapses runs of spaces and dashes of ASCII tables, since
// column widths follow the (normalised) contents.
func normalizeWidths(s string) string {
	s = regexp.MustCompile(` {2,}`).ReplaceAllString(s, " ")
	s = regexp.MustCompile(`-{2,}`).ReplaceAllString(s, "-")
	return s
}

func normMemberSimple(s string) string {
	var lines []string
	for _, line := range strings.Split(s, "\n") {
		f := strings.Split(line, ", ")
		if len(f) == 6 {
			f[0] = "<id>"
			f[3] = "<peer urls>"
		}
		lines = append(lines, strings.Join(f, ", "))
	}
	return strings.Join(lines, "\n")
}

func normHealth(s string) string {
	s = tookRe.ReplaceAllString(s, "took = <took>")
	return s
}

func normHealthTable(s string) string {
	return normTable(2)(s)
}
