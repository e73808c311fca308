package server

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestProbes: etcd's /livez and /readyz, verbose, per check, excluded, and
// a failing check (the CORRUPT alarm) with 503 and every check listed.
func TestProbes(t *testing.T) {
	ts := startTestServer(t, nil)
	base := "http://" + ts.s.ClientAddrs()[0]
	for _, c := range []struct {
		path, body string
		code       int
	}{
		{"/livez", "ok\n", 200},
		{"/livez?verbose", "[+]serializable_read ok\nok\n", 200},
		{"/readyz?verbose", "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\n[+]non_learner ok\nok\n", 200},
		{"/readyz?verbose&exclude=linearizable_read&exclude=non_learner", "[+]data_corruption ok\n[+]serializable_read ok\nok\n", 200},
		{"/readyz/linearizable_read?verbose", "[+]linearizable_read ok\nok\n", 200},
		{"/readyz/no_such_check", "404 page not found\n", 404},
	} {
		if code, body := httpGet(t, base+c.path); code != c.code || body != c.body {
			t.Errorf("GET %s: %d %q, want %d %q", c.path, code, body, c.code, c.body)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := pb.NewMaintenanceClient(ts.conn).Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, MemberID: ts.s.ids.Member, Alarm: pb.AlarmType_CORRUPT}); err != nil {
		t.Fatal(err)
	}
	want := "[-]data_corruption failed: alarm activated: CORRUPT\n[+]serializable_read ok\n[+]linearizable_read ok\n[+]non_learner ok\n"
	if code, body := httpGet(t, base+"/readyz"); code != 503 || body != want+"\n" {
		t.Errorf("GET /readyz with CORRUPT: %d %q, want 503 %q", code, body, want)
	}
	if code, body := httpGet(t, base+"/livez"); code != 200 || body != "ok\n" {
		t.Errorf("GET /livez with CORRUPT: %d %q", code, body)
	}
}

// TestClusterHealthLinearizable: on a cluster member /health reads
// through a ReadIndex round unless ?serializable=true; with no quorum the
// linearizable check fails (etcd's TestHTTPHealthHandler/network
// partitioned) and the serializable one does not.
func TestClusterHealthLinearizable(t *testing.T) {
	ms := startCluster(t, 3)
	lead := waitLeader(t, ms)
	waitPublished(t, ms)
	m := ms[lead]
	base := "http://" + m.s.ClientAddrs()[0]
	if code, body := httpGet(t, base+"/health"); code != 200 || body != `{"health":"true","reason":""}` {
		t.Fatalf("GET /health: %d %q", code, body)
	}
	for _, o := range others(ms, lead) {
		o.stop(t)
	}
	if code, body := httpGet(t, base+"/health?serializable=true"); code != 200 {
		t.Fatalf("GET /health?serializable=true without quorum: %d %q", code, body)
	}
	if code, body := httpGet(t, base+"/health"); code != 503 {
		t.Fatalf("GET /health without quorum: %d %q", code, body)
	}
	if code, body := httpGet(t, base+"/readyz"); code != 503 {
		t.Fatalf("GET /readyz without quorum: %d %q", code, body)
	}
}
