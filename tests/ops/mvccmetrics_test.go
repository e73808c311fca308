package ops

import (
	"bufio"
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/metastore-dev/metastore/tests/framework"
)

// mvccSeries are etcd's mvcc operation counters (and the put size, which
// etcd declares a gauge).
var mvccSeries = []string{
	"etcd_mvcc_range_total", "etcd_mvcc_put_total", "etcd_mvcc_delete_total", "etcd_mvcc_txn_total",
	"etcd_debugging_mvcc_total_put_size_in_bytes",
}

// TestMVCCCounters runs one sequence of requests against an etcd process
// and a metastore process and compares how much each of etcd's mvcc
// counters grew, and their types: puts with and without prev_kv and
// ignore_value (one refused for a missing key, one for a missing lease),
// serializable and linearizable gets, deletes, write txns taking either
// branch with nested txns and short-circuited compares, a read-only txn,
// and a lease revoke that deletes two keys.
func TestMVCCCounters(t *testing.T) {
	etcd := framework.StartEtcdProcess(t, t.TempDir())
	ms := framework.StartMetastoreProcess(t, t.TempDir())
	got := map[string]map[string]float64{}
	types := map[string]map[string]string{}
	for _, p := range []*framework.Process{etcd, ms} {
		before := mvccValues(t, p.Endpoint)
		mvccSequence(t, framework.NewClient(t, p.Endpoint))
		after := mvccValues(t, p.Endpoint)
		got[p.Kind] = map[string]float64{}
		for _, name := range mvccSeries {
			got[p.Kind][name] = after[name] - before[name]
		}
		types[p.Kind] = mvccTypes(t, p.Endpoint)
		got[p.Kind]["keys"] = scrape(t, p.Endpoint, "etcd_debugging_mvcc_keys_total")
	}
	// etcd's live-key gauge: exported once the store counts live keys
	// (mvcc.Store.LiveKeys); then it must equal etcd's.
	switch e, m := got["etcd"]["keys"], got["metastore"]["keys"]; {
	case e < 0:
		t.Error("etcd exports no etcd_debugging_mvcc_keys_total")
	case m < 0:
		t.Log("metastore does not export etcd_debugging_mvcc_keys_total yet (no mvcc.Store.LiveKeys)")
	case e != m:
		t.Errorf("etcd_debugging_mvcc_keys_total: %v on metastore, %v on etcd", m, e)
	}
	for _, name := range mvccSeries {
		e, m := got["etcd"][name], got["metastore"][name]
		t.Logf("%s: etcd +%v, metastore +%v", name, e, m)
		if e != m || e == 0 {
			t.Errorf("%s grew by %v on metastore, %v on etcd", name, m, e)
		}
		if types["etcd"][name] == "" || types["etcd"][name] != types["metastore"][name] {
			t.Errorf("%s: type %q on metastore, %q on etcd", name, types["metastore"][name], types["etcd"][name])
		}
	}
}

func mvccSequence(t *testing.T, cli *clientv3.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	fails := func(_ any, err error) {
		t.Helper()
		if err == nil {
			t.Fatal("expected an error")
		}
	}
	must(cli.Put(ctx, "a", "1"))
	must(cli.Put(ctx, "a", "22", clientv3.WithPrevKV()))
	must(cli.Put(ctx, "a", "", clientv3.WithIgnoreValue()))
	fails(cli.Put(ctx, "missing", "", clientv3.WithIgnoreValue()))
	fails(cli.Put(ctx, "nolease", "v", clientv3.WithLease(0x7777)))
	must(cli.Get(ctx, "a"))
	must(cli.Get(ctx, "a", clientv3.WithSerializable()))
	must(cli.Get(ctx, "a", clientv3.WithPrefix(), clientv3.WithCountOnly()))
	must(cli.Delete(ctx, "a", clientv3.WithPrevKV()))
	must(cli.Delete(ctx, "nothing"))
	// A value compare on a missing key fails: the else branch.
	must(cli.Txn(ctx).If(clientv3.Compare(clientv3.Value("a"), "=", "x")).
		Then(clientv3.OpPut("never", "v")).
		Else(clientv3.OpPut("c", "3"), clientv3.OpGet("c"), clientv3.OpDelete("d")).Commit())
	// Both compares hold; a nested txn on the path.
	must(cli.Txn(ctx).If(clientv3.Compare(clientv3.Version("c"), ">", 0), clientv3.Compare(clientv3.Value("c"), "=", "3")).
		Then(clientv3.OpPut("e", "5", clientv3.WithPrevKV()),
			clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Version("e"), "=", 0)},
				[]clientv3.Op{clientv3.OpGet("e")}, []clientv3.Op{clientv3.OpDelete("c", clientv3.WithPrevKV())})).Commit())
	// The first of three compares fails: the others are not read.
	must(cli.Txn(ctx).If(clientv3.Compare(clientv3.Value("c"), "=", "no"), clientv3.Compare(clientv3.Version("e"), "=", 1),
		clientv3.Compare(clientv3.CreateRevision("c"), ">", 0)).
		Then(clientv3.OpDelete("e")).Else(clientv3.OpPut("f", "6"), clientv3.OpPut("e", "", clientv3.WithIgnoreValue())).Commit())
	// Read-only, serializable and not.
	must(cli.Txn(ctx).If(clientv3.Compare(clientv3.Value("c"), "=", "3"), clientv3.Compare(clientv3.Version("zz"), "=", 1)).
		Then(clientv3.OpGet("c")).Else(clientv3.OpGet("e"), clientv3.OpGet("c", clientv3.WithSerializable())).Commit())
	must(cli.Txn(ctx).Then(clientv3.OpGet("e")).Commit())
	// A one-op txn and an empty one.
	must(cli.Txn(ctx).Then(clientv3.OpPut("g", "7")).Commit())
	must(cli.Txn(ctx).Commit())
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	must(cli.Put(ctx, "l1", "x", clientv3.WithLease(lease.ID)))
	must(cli.Put(ctx, "l2", "yy", clientv3.WithLease(lease.ID)))
	must(cli.Revoke(ctx, lease.ID))
}

func mvccValues(t *testing.T, endpoint string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, name := range mvccSeries {
		v := scrape(t, endpoint, name)
		if v < 0 {
			t.Fatalf("%s: no %s", endpoint, name)
		}
		out[name] = v
	}
	return out
}

// mvccTypes reads the "# TYPE" lines of mvccSeries.
func mvccTypes(t *testing.T, endpoint string) map[string]string {
	t.Helper()
	out := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(metricsText(t, endpoint)))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			out[f[2]] = f[3]
		}
	}
	return out
}
