package cluster

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The raft, peer and disk series etcd dashboards chart, with the type etcd
// gives them.
var etcdClusterSeries = map[string]string{
	"etcd_server_has_leader":                    "gauge",
	"etcd_server_is_leader":                     "gauge",
	"etcd_server_leader_changes_seen_total":     "counter",
	"etcd_server_proposals_committed_total":     "gauge",
	"etcd_server_proposals_applied_total":       "gauge",
	"etcd_server_proposals_pending":             "gauge",
	"etcd_server_proposals_failed_total":        "counter",
	"etcd_network_peer_sent_bytes_total":        "counter",
	"etcd_network_peer_received_bytes_total":    "counter",
	"etcd_network_peer_round_trip_time_seconds": "histogram",
	"etcd_disk_wal_fsync_duration_seconds":      "histogram",
	"etcd_disk_backend_commit_duration_seconds": "histogram",
	"etcd_network_active_peers":                 "gauge",
	"etcd_network_known_peers":                  "gauge",
}

// The failure counters: etcd's appear with the first failure (a member
// that stops answering makes its peers' sends fail).
var etcdFailureSeries = map[string]string{
	"etcd_network_peer_sent_failures_total":     "counter To",
	"etcd_network_peer_received_failures_total": "counter From",
}

// metricFamily is one family of a /metrics page: its type and samples.
type metricFamily struct {
	typ     string
	samples []metricSample
}

type metricSample struct {
	name   string // with _bucket, _sum or _count for a histogram
	labels map[string]string
	value  float64
}

// parseMetrics reads Prometheus' text format: "# TYPE" lines and samples.
func parseMetrics(t *testing.T, text string) map[string]*metricFamily {
	t.Helper()
	fams := map[string]*metricFamily{}
	family := func(sample string) *metricFamily {
		if f := fams[sample]; f != nil {
			return f
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if f := fams[strings.TrimSuffix(sample, suffix)]; f != nil && strings.HasSuffix(sample, suffix) {
				return f
			}
		}
		return nil
	}
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, typ, _ := strings.Cut(rest, " ")
			fams[name] = &metricFamily{typ: typ}
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s := metricSample{labels: map[string]string{}}
		rest := line
		if i := strings.IndexAny(line, "{ "); i >= 0 && line[i] == '{' {
			s.name, rest = line[:i], line[i+1:]
			for !strings.HasPrefix(rest, "}") {
				k, r, ok := strings.Cut(rest, `="`)
				if !ok {
					t.Fatalf("bad metric line %q", line)
				}
				var v strings.Builder
				for len(r) > 0 && r[0] != '"' {
					if r[0] == '\\' && len(r) > 1 {
						r = r[1:]
					}
					v.WriteByte(r[0])
					r = r[1:]
				}
				s.labels[k] = v.String()
				rest = strings.TrimPrefix(strings.TrimPrefix(r, `"`), ",")
			}
			rest = strings.TrimSpace(rest[1:])
		} else {
			s.name, rest, _ = strings.Cut(line, " ")
		}
		v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
		if err != nil {
			t.Fatalf("bad metric value in %q: %v", line, err)
		}
		s.value = v
		if f := family(s.name); f != nil {
			f.samples = append(f.samples, s)
		}
	}
	return fams
}

func scrapeMember(t *testing.T, m *Member) map[string]*metricFamily {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(m.ClientURL + "/metrics")
	if err != nil {
		t.Fatalf("%s: /metrics: %v", m, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return parseMetrics(t, string(b))
}

// shape is a family's type and the label names of its samples.
func (f *metricFamily) shape() string {
	var names []string
	for _, s := range f.samples {
		for k := range s.labels {
			if k != "le" && !slices.Contains(names, k) {
				names = append(names, k)
			}
		}
	}
	slices.Sort(names)
	return f.typ + " " + strings.Join(names, ",")
}

// value returns the sum of the family's samples named name whose labels
// include want.
func (f *metricFamily) value(name string, want map[string]string) float64 {
	sum := 0.0
	for _, s := range f.samples {
		if s.name != name {
			continue
		}
		ok := true
		for k, v := range want {
			ok = ok && s.labels[k] == v
		}
		if ok {
			sum += s.value
		}
	}
	return sum
}

// TestEtcdClusterMetrics: the raft, peer and disk series of a 3-member
// cluster have etcd's names, types and labels on metastore (compared with
// a real etcd's /metrics), and values that say what etcd's say: one
// leader, committed ≥ applied, bytes and round trips per peer labelled
// with its ID, fsyncs and backend commits observed.
func TestEtcdClusterMetrics(t *testing.T) {
	shapes := map[string]map[string]string{}
	for _, kind := range Kinds() {
		t.Run(kind, func(t *testing.T) {
			shapes[kind] = clusterMetrics(t, kind)
		})
	}
	if e, m := shapes[Etcd], shapes[Metastore]; e != nil && m != nil {
		if d := cmp.Diff(e, m); d != "" {
			t.Errorf("metastore's series differ from etcd's (-etcd +metastore):\n%s", d)
		}
	}
}

func clusterMetrics(t *testing.T, kind string) map[string]string {
	c := Start(t, Config{Kind: kind})
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range 20 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/metrics/k%d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	ids := map[*Member]string{}
	for _, m := range c.Members {
		st, err := m.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ids[m] = strconv.FormatUint(st.Header.MemberId, 16)
	}
	// Round trips are first observed a few seconds in (etcd: 5s).
	var fams []map[string]*metricFamily
	for deadline := time.Now().Add(30 * time.Second); ; {
		fams = fams[:0]
		ready := true
		for _, m := range c.Members {
			f := scrapeMember(t, m)
			fams = append(fams, f)
			rtt := f["etcd_network_peer_round_trip_time_seconds"]
			for _, o := range c.Members {
				ready = ready && (o == m || rtt != nil && rtt.value("etcd_network_peer_round_trip_time_seconds_count", map[string]string{"To": ids[o]}) > 0)
			}
		}
		if ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no round trip observed to every peer")
		}
		time.Sleep(500 * time.Millisecond)
	}
	shape := map[string]string{}
	leaders := 0.0
	var leader *Member
	for i, m := range c.Members {
		if f := fams[i]["etcd_server_is_leader"]; f != nil && f.value("etcd_server_is_leader", nil) == 1 {
			leader = m
		}
	}
	for i, m := range c.Members {
		f := fams[i]
		for name, typ := range etcdClusterSeries {
			fam := f[name]
			if fam == nil {
				t.Errorf("%s: no %s", m, name)
				continue
			}
			if fam.typ != typ {
				t.Errorf("%s: %s is a %s, want %s", m, name, fam.typ, typ)
			}
			shape[name] = fam.shape()
		}
		if t.Failed() {
			return nil
		}
		if v := f["etcd_server_has_leader"].value("etcd_server_has_leader", nil); v != 1 {
			t.Errorf("%s: has_leader %v", m, v)
		}
		leaders += f["etcd_server_is_leader"].value("etcd_server_is_leader", nil)
		if v := f["etcd_server_leader_changes_seen_total"].value("etcd_server_leader_changes_seen_total", nil); v < 1 {
			t.Errorf("%s: leader_changes_seen_total %v", m, v)
		}
		// Every member knows the three; its connections to the two others
		// are up (round trips were observed to each).
		for _, o := range c.Members {
			want := map[string]string{"Local": ids[m], "Remote": ids[o]}
			if v := f["etcd_network_known_peers"].value("etcd_network_known_peers", want); v != 1 {
				t.Errorf("%s: known_peers %v = %v", m, want, v)
			}
			if v := f["etcd_network_active_peers"].value("etcd_network_active_peers", want); o != m && v != 1 {
				t.Errorf("%s: active_peers %v = %v", m, want, v)
			}
		}
		committed := f["etcd_server_proposals_committed_total"].value("etcd_server_proposals_committed_total", nil)
		applied := f["etcd_server_proposals_applied_total"].value("etcd_server_proposals_applied_total", nil)
		if applied < 20 || committed < applied {
			t.Errorf("%s: committed %v, applied %v", m, committed, applied)
		}
		// The leader and each follower exchange messages (followers do
		// not talk to each other).
		for _, o := range c.Members {
			if o == m || (m != leader && o != leader) {
				continue
			}
			if v := f["etcd_network_peer_sent_bytes_total"].value("etcd_network_peer_sent_bytes_total", map[string]string{"To": ids[o]}); v <= 0 {
				t.Errorf("%s: sent bytes to %s: %v", m, o, v)
			}
			if v := f["etcd_network_peer_received_bytes_total"].value("etcd_network_peer_received_bytes_total", map[string]string{"From": ids[o]}); v <= 0 {
				t.Errorf("%s: received bytes from %s: %v", m, o, v)
			}
		}
		for _, h := range []string{"etcd_disk_wal_fsync_duration_seconds", "etcd_disk_backend_commit_duration_seconds"} {
			if v := f[h].value(h+"_count", nil); v < 1 {
				t.Errorf("%s: %s observed %v times", m, h, v)
			}
		}
	}
	if leaders != 1 || leader == nil {
		t.Fatalf("is_leader summed over the members: %v", leaders)
	}

	// A follower stops: the leader's sends to it fail, counted by its ID.
	var gone *Member
	var rest []*Member
	for _, m := range c.Members {
		if m != leader && gone == nil {
			gone = m
		} else {
			rest = append(rest, m)
		}
	}
	gone.Kill()
	for deadline := time.Now().Add(30 * time.Second); ; {
		if f := scrapeMember(t, leader)["etcd_network_peer_sent_failures_total"]; f != nil &&
			f.value("etcd_network_peer_sent_failures_total", map[string]string{"To": ids[gone]}) > 0 {
			shape["etcd_network_peer_sent_failures_total"] = f.shape()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the leader's sends to the stopped member not counted as failures")
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, m := range rest {
		for name, want := range etcdFailureSeries {
			if f := scrapeMember(t, m)[name]; f != nil && f.shape() != want {
				t.Errorf("%s: %s is %q, want %q", m, name, f.shape(), want)
			}
		}
	}
	return shape
}
