// Command e2esummary turns the go test -json output of etcd's tests/common
// suite, run once against etcd and once against metastore, into a
// markdown report: counts per server side by side, then every case whose
// outcome differs.
//
// Only leaf cases are counted (a test with subtests is the sum of its
// subtests). Cases are counted once more by the size of the cluster they
// started (the distinct members the framework logged starting), and the
// cases that loop over etcd's cluster shapes by shape (NoTLS, ClientTLS
// and ClientAutoTLS are one member; PeerTLS and PeerAutoTLS three).
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

// members returns how many distinct members the case started (the
// framework logs `starting server...	{"name": "<member>"}` for each
// start); 0 if it started none.
func (r *run) members(name string) int {
	b := r.output[name]
	if b == nil {
		return 0
	}
	seen := map[string]bool{}
	const mark = "starting server...\t{\"name\": \""
	for _, line := range strings.Split(b.String(), "\n") {
		if _, rest, ok := strings.Cut(line, mark); ok {
			member, _, _ := strings.Cut(rest, "\"")
			seen[member] = true
		}
	}
	return len(seen)
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
	for _, o := range []outcome{pass, fail, skip, notRun} {
		if count(e, o)+count(m, o) == 0 && o == notRun {
			continue
		}
		label := map[outcome]string{pass: "passed", fail: "failed", skip: "skipped", notRun: "not finished"}[o]
		fmt.Fprintf(w, "| %s | %d | %d |\n", label, count(e, o), count(m, o))
	}

	get := func(m map[string]outcome, n string) outcome {
		if o, ok := m[n]; ok {
			return o
		}
		return notFound
	}
	// By cluster size, as the run against etcd started them.
	sizes := map[int][3]int{}
	for _, n := range sorted {
		k := etcdRun.members(n)
		c := sizes[k]
		c[0]++
		if get(e, n) == pass {
			c[1]++
		}
		if get(m, n) == pass {
			c[2]++
		}
		sizes[k] = c
	}
	keys := make([]int, 0, len(sizes))
	for k := range sizes {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	fmt.Fprintln(w, "\n| cluster size | cases | etcd passed | metastore passed |\n|---|---:|---:|---:|")
	for _, k := range keys {
		label := fmt.Sprintf("%d", k)
		if k == 0 {
			label = "none started (skipped early)"
		}
		fmt.Fprintf(w, "| %s | %d | %d | %d |\n", label, sizes[k][0], sizes[k][1], sizes[k][2])
	}

	// By cluster shape: cases named after one of etcd's clusterTestCases.
	fmt.Fprintln(w, "\n| shape (members) | cases | etcd passed | metastore passed |\n|---|---:|---:|---:|")
	for _, sh := range []struct {
		name    string
		members int
	}{{"NoTLS", 1}, {"ClientTLS", 1}, {"ClientAutoTLS", 1}, {"PeerTLS", 3}, {"PeerAutoTLS", 3}} {
		cases, ep, mp := 0, 0, 0
		for _, n := range sorted {
			if n[strings.LastIndex(n, "/")+1:] != sh.name {
				continue
			}
			cases++
			if get(e, n) == pass {
				ep++
			}
			if get(m, n) == pass {
				mp++
			}
		}
		fmt.Fprintf(w, "| %s (%d) | %d | %d | %d |\n", sh.name, sh.members, cases, ep, mp)
	}

	var diff []string
	for _, n := range sorted {
		if get(e, n) != get(m, n) {
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
	if all {
		fmt.Fprintln(w, "\n| case | etcd | metastore |\n|---|---|---|")
		for _, n := range sorted {
			fmt.Fprintf(w, "| `%s` | %s | %s |\n", n, get(e, n), get(m, n))
		}
	}
}
