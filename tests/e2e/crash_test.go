package e2e

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/tests/framework"
)

// crashOp is one write a writer sent: a put of one key, or a txn putting
// two keys (its key and the writer's txn marker) in one revision.
type crashOp struct {
	writer int
	seq    int
	keys   []string
	value  string
	acked  bool
	rev    int64 // revision from the acknowledgement
}

// TestCrashRecovery starts the metastore binary, runs concurrent writers
// that record every acknowledged write, SIGKILLs the process mid-write,
// restarts it on the same data directory and checks, after every cycle:
//   - every acknowledged write is there (a read at its revision returns it
//     with that mod_revision) and each key's current value is the last
//     acknowledged one or the writer's one later, unacknowledged write;
//   - an unacknowledged txn is all or nothing;
//   - revisions continue without gaps or reuse: acknowledged revisions are
//     distinct per op, the current revision equals 1 + the number of
//     committed write ops, each key's version equals its committed writes,
//     and the next write gets the next revision.
//
// With METASTORE_COMPAT_ONLY_ETCD set it runs against the etcd binary.
// METASTORE_CRASH_CYCLES changes the number of kill/restart cycles (5, or
// 100 with METASTORE_SOAK as `make soak` sets).
// tests/reliability checks deletes, compare-and-swap and linearizability
// across the same kind of crashes.
func TestCrashRecovery(t *testing.T) {
	t.Parallel()
	cycles := 5
	if v := os.Getenv("METASTORE_SOAK"); v != "" && v != "0" {
		cycles = 100
	}
	if s := os.Getenv("METASTORE_CRASH_CYCLES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("METASTORE_CRASH_CYCLES: %v", err)
		}
		cycles = n
	}
	dataDir := t.TempDir()
	var p *framework.Process
	if framework.OnlyEtcd() {
		p = framework.StartEtcdProcess(t, dataDir)
	} else {
		p = framework.StartMetastoreProcess(t, dataDir)
	}

	const writers = 8
	st := &crashState{committedPending: map[*crashOp]bool{}}
	for cycle := 0; cycle < cycles; cycle++ {
		// The kill point moves with the cycle; bounded so long soaks do
		// not grow each cycle without end.
		ops := runWritersUntilKill(t, p, cycle, writers, 150+100*(cycle%5))
		st.ops = append(st.ops, ops...)
		st.current = map[*crashOp]bool{}
		for _, o := range ops {
			st.current[o] = true
		}
		if t.Failed() {
			return
		}
		p.Restart()
		if strings.Contains(p.Log(), "WARNING: DATA RACE") {
			t.Fatalf("data race reported by the server:\n%s", p.Log())
		}
		st.verify(t, p, cycle)
		if t.Failed() {
			return
		}
	}
	if err := p.Stop(); err != nil {
		t.Errorf("graceful stop after the crash cycles: %v", err)
	}
	if strings.Contains(p.Log(), "WARNING: DATA RACE") {
		t.Errorf("data race reported by the server:\n%s", p.Log())
	}
}

// crashState is what the test knows across cycles.
type crashState struct {
	ops              []*crashOp        // every op sent, in cycle order, each writer's in sequence
	current          map[*crashOp]bool // the ops of the last cycle
	committedPending map[*crashOp]bool // unacknowledged ops found committed after a restart
	probes           int               // probe puts made after restarts (one revision each)
}

// runWritersUntilKill runs the writers until at least minAcked writes of
// this cycle are acknowledged, SIGKILLs the server while they keep writing,
// and returns every op sent in the cycle.
func runWritersUntilKill(t *testing.T, p *framework.Process, cycle, writers, minAcked int) []*crashOp {
	cli := framework.NewClient(t, p.Endpoint)
	kv := pb.NewKVClient(cli.ActiveConnection())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var acked atomic.Int64
	reached := make(chan struct{})
	var once sync.Once
	perWriter := make([][]*crashOp, writers)
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for seq := 0; ctx.Err() == nil; seq++ {
				op := &crashOp{writer: w, seq: seq, value: fmt.Sprintf("c%d/w%d/n%d", cycle, w, seq)}
				key := fmt.Sprintf("crash/w%d/k%d", w, (seq*7+cycle)%8)
				var rev int64
				var err error
				rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
				if seq%3 == 2 {
					op.keys = []string{key, fmt.Sprintf("crash/w%d/txn", w)}
					perWriter[w] = append(perWriter[w], op)
					var r *pb.TxnResponse
					r, err = kv.Txn(rctx, &pb.TxnRequest{
						Compare: []*pb.Compare{{Key: []byte(key), Target: pb.Compare_VERSION, Result: pb.Compare_GREATER, TargetUnion: &pb.Compare_Version{Version: -1}}},
						Success: []*pb.RequestOp{
							{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(op.keys[0]), Value: []byte(op.value)}}},
							{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(op.keys[1]), Value: []byte(op.value)}}},
						},
					})
					if err == nil {
						rev = r.Header.Revision
						if !r.Succeeded {
							err = fmt.Errorf("txn compare failed")
						}
					}
				} else {
					op.keys = []string{key}
					perWriter[w] = append(perWriter[w], op)
					var r *pb.PutResponse
					r, err = kv.Put(rctx, &pb.PutRequest{Key: []byte(key), Value: []byte(op.value)})
					if err == nil {
						rev = r.Header.Revision
					}
				}
				rcancel()
				if err != nil {
					return // the server is gone (or going); this op stays unacknowledged
				}
				op.acked, op.rev = true, rev
				if acked.Add(1) >= int64(minAcked) {
					once.Do(func() { close(reached) })
				}
			}
		}(w)
	}
	select {
	case <-reached:
	case <-time.After(2 * time.Minute):
		t.Errorf("cycle %d: only %d writes acknowledged in 2 minutes", cycle, acked.Load())
	}
	p.Kill()
	cancel()
	wg.Wait()
	cli.Close()
	var ops []*crashOp
	for _, o := range perWriter {
		ops = append(ops, o...)
	}
	n := 0
	for _, o := range ops {
		if o.acked {
			n++
		}
	}
	t.Logf("cycle %d: %d ops sent, %d acknowledged before SIGKILL", cycle, len(ops), n)
	return ops
}

// verify checks every op so far against the restarted server.
func (st *crashState) verify(t *testing.T, p *framework.Process, cycle int) {
	t.Helper()
	cli := framework.NewClient(t, p.Endpoint)
	defer cli.Close()
	kv := pb.NewKVClient(cli.ActiveConnection())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	get := func(key string, rev int64) *pb.RangeResponse {
		t.Helper()
		r, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte(key), Revision: rev})
		if err != nil {
			t.Fatalf("cycle %d: get %s at revision %d: %v", cycle, key, rev, err)
		}
		return r
	}

	// Acknowledged revisions are distinct per op, and every acknowledged
	// write is readable at its revision with that mod_revision.
	byRev := map[int64]*crashOp{}
	var maxAcked int64
	acked := 0
	for _, o := range st.ops {
		if !o.acked {
			continue
		}
		acked++
		if prev, dup := byRev[o.rev]; dup {
			t.Errorf("revision %d acknowledged to two ops: %q and %q", o.rev, prev.value, o.value)
		}
		byRev[o.rev] = o
		maxAcked = max(maxAcked, o.rev)
		for _, k := range o.keys {
			r := get(k, o.rev)
			if len(r.Kvs) != 1 || string(r.Kvs[0].Value) != o.value || r.Kvs[0].ModRevision != o.rev {
				t.Errorf("cycle %d: acknowledged write %s=%q at revision %d lost: read %v", cycle, k, o.value, o.rev, r.Kvs)
			}
		}
	}

	// Each key's current value is its last known-committed write, or the
	// writer's last, unacknowledged write of this cycle if that committed.
	byKey := map[string][]*crashOp{}
	var names []string
	for _, o := range st.ops {
		for _, k := range o.keys {
			if byKey[k] == nil {
				names = append(names, k)
			}
			byKey[k] = append(byKey[k], o)
		}
	}
	sort.Strings(names)
	seen := map[*crashOp]int{}
	writes := map[string]int{}
	current := map[string]*pb.RangeResponse{}
	for _, k := range names {
		last := ""
		var candidate *crashOp
		for _, o := range byKey[k] {
			switch {
			case o.acked || st.committedPending[o]:
				last = o.value
				writes[k]++
			case st.current[o]:
				candidate = o // the writer's last op: it stopped at its first error
			}
		}
		r := get(k, 0)
		current[k] = r
		cur := ""
		if len(r.Kvs) == 1 {
			cur = string(r.Kvs[0].Value)
		}
		switch {
		case candidate != nil && cur == candidate.value:
			seen[candidate]++
			writes[k]++
		case cur == last:
		default:
			want := fmt.Sprintf("%q", last)
			if candidate != nil {
				want += fmt.Sprintf(" or the unacknowledged %q", candidate.value)
			}
			t.Errorf("cycle %d: key %s = %q, want %s", cycle, k, cur, want)
		}
	}
	for o, n := range seen {
		if n != len(o.keys) {
			t.Errorf("cycle %d: unacknowledged txn %q applied to %d of its %d keys", cycle, o.value, n, len(o.keys))
		}
		st.committedPending[o] = true
	}
	// No other keys appeared.
	all, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("crash/w"), RangeEnd: []byte("crash/x"), KeysOnly: true})
	if err != nil {
		t.Fatalf("cycle %d: range: %v", cycle, err)
	}
	var got []string
	for _, k := range all.Kvs {
		if current[string(k.Key)] == nil || len(current[string(k.Key)].Kvs) == 0 {
			got = append(got, string(k.Key))
		}
	}
	if len(got) != 0 {
		t.Errorf("cycle %d: keys present that no write created (or that read as absent): %q", cycle, got)
	}
	// Keys are never deleted: a key's version is its number of committed writes.
	for _, k := range names {
		if r := current[k]; len(r.Kvs) == 1 && r.Kvs[0].Version != int64(writes[k]) {
			t.Errorf("cycle %d: key %s has version %d, want %d (its committed writes)", cycle, k, r.Kvs[0].Version, writes[k])
		}
	}

	// No gaps, no reuse: the store started at 1 and every committed write
	// op (acknowledged, unacknowledged-but-committed, probe) added one.
	rev := get("crash/none", 0).Header.Revision
	want := int64(1 + acked + len(st.committedPending) + st.probes)
	if rev != want {
		t.Errorf("cycle %d: current revision %d after restart, want %d (1 + %d acknowledged + %d unacknowledged-but-committed + %d probe writes)",
			cycle, rev, want, acked, len(st.committedPending), st.probes)
	}
	if rev < maxAcked {
		t.Errorf("cycle %d: current revision %d is below the acknowledged revision %d", cycle, rev, maxAcked)
	}
	// New writes get the next revisions.
	for i := int64(1); i <= 2; i++ {
		pr, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("crash/probe"), Value: []byte(strconv.Itoa(cycle))})
		if err != nil {
			t.Fatalf("cycle %d: put after restart: %v", cycle, err)
		}
		st.probes++
		if pr.Header.Revision != rev+i {
			t.Errorf("cycle %d: put after restart got revision %d, want %d", cycle, pr.Header.Revision, rev+i)
		}
	}
	t.Logf("cycle %d: verified %d acknowledged ops (%d unacknowledged found committed); revision %d", cycle, acked, len(seen), rev)
}
