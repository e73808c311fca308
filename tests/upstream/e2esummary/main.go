// Command e2esummary turns the go test -json output of etcd's tests/common
// suite, run once against etcd and once against metastore, into a
// markdown report: counts per server side by side, then every case whose
// outcome differs.
//
// Only leaf cases are counted (a test with subtests is the sum of its
// subtests). A metastore case that could not start because its cluster
// has more than one member is counted as "not applicable" rather than
// failed: metastore runs a single member until clustering lands.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// multiMember is what metastore says when asked to start as one member of
// a larger cluster (server/config's --initial-cluster check).
const multiMember = "but metastore runs a single member"

type event struct {
	Action string
	Test   string
	Output string
}

// outcome is one case's result in one run.
type outcome string

const (
	pass     outcome = "pass"
	fail     outcome = "fail"
	skip     outcome = "skip"
	na       outcome = "n/a"
	notRun   outcome = "not run" // started but never finished (the run timed out or panicked)
	notFound outcome = "-"
)

// run is one server's results by test name.
type run struct {
	result map[string]outcome
	output map[string]*strings.Builder
}

func readRun(path string) (*run, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := &run{result: map[string]outcome{}, output: map[string]*strings.Builder{}}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) != nil || e.Test == "" {
			continue // go test's own lines (build output) are not events
		}
		switch e.Action {
		case "run":
			if _, ok := r.result[e.Test]; !ok {
				r.result[e.Test] = notRun
			}
		case "pass", "fail", "skip":
			r.result[e.Test] = outcome(e.Action)
		case "output":
			b := r.output[e.Test]
			if b == nil {
				b = &strings.Builder{}
				r.output[e.Test] = b
			}
			b.WriteString(e.Output)
		}
	}
	return r, sc.Err()
}

// leaves drops every test that has subtests.
func (r *run) leaves() map[string]outcome {
	out := map[string]outcome{}
	for name, o := range r.result {
		parent := false
		for other := range r.result {
			if strings.HasPrefix(other, name+"/") {
				parent = true
				break
			}
		}
		if parent {
			continue
		}
		if o == fail && r.output[name] != nil && strings.Contains(r.output[name].String(), multiMember) {
			o = na
		}
		out[name] = o
	}
	return out
}

func count(m map[string]outcome, o outcome) int {
	n := 0
	for _, v := range m {
		if v == o {
			n++
		}
	}
	return n
}

// firstError returns the first line of a failed case's output that looks
// like the failure, trimmed, for the differences table.
func firstError(r *run, name string) string {
	b := r.output[name]
	if b == nil {
		return ""
	}
	for _, line := range strings.Split(b.String(), "\n") {
		l := strings.TrimSpace(line)
		if strings.Contains(l, "logger.go:") || l == "" || strings.HasPrefix(l, "=== ") || strings.HasPrefix(l, "--- ") {
			continue
		}
		if strings.Contains(l, "Error") || strings.Contains(l, "error") || strings.Contains(l, ".go:") {
			l = strings.ReplaceAll(l, "|", "\\|")
			if len(l) > 160 {
				l = l[:160] + "…"
			}
			return l
		}
	}
	return ""
}

func main() {
	etcdPath := flag.String("etcd", "", "go test -json output of the run against etcd")
	msPath := flag.String("metastore", "", "go test -json output of the run against metastore")
	all := flag.Bool("all", false, "list every case, not only those whose outcomes differ")
	flag.Parse()
	if *etcdPath == "" || *msPath == "" {
		fmt.Fprintln(os.Stderr, "usage: e2esummary -etcd etcd.json -metastore metastore.json [-all]")
		os.Exit(2)
	}
	etcdRun, err := readRun(*etcdPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2esummary:", err)
		os.Exit(1)
	}
	msRun, err := readRun(*msPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2esummary:", err)
		os.Exit(1)
	}
	write(os.Stdout, etcdRun, msRun, *all)
}

func write(w io.Writer, etcdRun, msRun *run, all bool) {
	e, m := etcdRun.leaves(), msRun.leaves()
	names := map[string]bool{}
	for n := range e {
		names[n] = true
	}
	for n := range m {
		names[n] = true
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)

	fmt.Fprintf(w, "| cases (%d) | etcd | metastore |\n|---|---:|---:|\n", len(sorted))
	for _, o := range []outcome{pass, fail, skip, na, notRun} {
		if count(e, o)+count(m, o) == 0 && o != pass && o != fail && o != skip {
			continue
		}
		label := map[outcome]string{pass: "passed", fail: "failed", skip: "skipped", na: "not applicable (cluster of 3)", notRun: "not finished"}[o]
		fmt.Fprintf(w, "| %s | %d | %d |\n", label, count(e, o), count(m, o))
	}

	get := func(m map[string]outcome, n string) outcome {
		if o, ok := m[n]; ok {
			return o
		}
		return notFound
	}
	var diff, napp []string
	for _, n := range sorted {
		eo, mo := get(e, n), get(m, n)
		switch {
		case mo == na:
			napp = append(napp, n)
		case eo != mo:
			diff = append(diff, n)
		}
	}
	fmt.Fprintf(w, "\nCases whose outcome differs (%d):\n\n", len(diff))
	if len(diff) > 0 {
		fmt.Fprintln(w, "| case | etcd | metastore | metastore's first error |\n|---|---|---|---|")
		for _, n := range diff {
			fmt.Fprintf(w, "| `%s` | %s | %s | %s |\n", n, get(e, n), get(m, n), firstError(msRun, n))
		}
	}
	// Not-applicable cases are listed by top-level test, with what etcd
	// made of them.
	var tops []string
	byTop := map[string][]string{}
	for _, n := range napp {
		top, _, _ := strings.Cut(n, "/")
		if byTop[top] == nil {
			tops = append(tops, top)
		}
		byTop[top] = append(byTop[top], n)
	}
	fmt.Fprintf(w, "\nNot applicable to metastore until clustering (a cluster of 3; %d cases):", len(napp))
	for i, top := range tops {
		etcdPassed := 0
		for _, n := range byTop[top] {
			if get(e, n) == pass {
				etcdPassed++
			}
		}
		sep := ","
		if i == 0 {
			sep = ""
		}
		fmt.Fprintf(w, "%s `%s` (%d, etcd passed %d)", sep, top, len(byTop[top]), etcdPassed)
	}
	fmt.Fprintln(w, ".")
	if all {
		fmt.Fprintln(w, "\n| case | etcd | metastore |\n|---|---|---|")
		for _, n := range sorted {
			fmt.Fprintf(w, "| `%s` | %s | %s |\n", n, get(e, n), get(m, n))
		}
	}
}
