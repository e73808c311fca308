package server

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/metastore-dev/metastore/server/config"
)

// TestQuotaCountsUnflushedWrites is etcd's TestKVPutError against the
// server: with a quota of about 1.9 MB, a 1.5 MB put fits, and a second
// one, right after it (its bytes are still in the memtable and WAL), does
// not: ErrGRPCNoSpace, and the NOSPACE alarm is raised.
func TestQuotaCountsUnflushedWrites(t *testing.T) {
	const maxReqBytes = 3 << 19 // 1.5 MiB
	quota := int64(maxReqBytes*12/10 + 8*4096)
	ts := startTestServer(t, func(c *config.Config) { c.Limits.QuotaBackendBytes = quota })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	big := strings.Repeat("a", int(maxReqBytes-50))
	if _, err := ts.kv.Put(ctx, &pb.PutRequest{Value: []byte("bar")}); rpctypes.Error(err) != rpctypes.ErrEmptyKey {
		t.Fatalf("empty key: %v, want %v", err, rpctypes.ErrEmptyKey)
	}
	if _, err := ts.kv.Put(ctx, &pb.PutRequest{Key: []byte("key"), Value: []byte(strings.Repeat("a", maxReqBytes+100))}); rpctypes.Error(err) != rpctypes.ErrRequestTooLarge {
		t.Fatalf("too large: %v, want %v", err, rpctypes.ErrRequestTooLarge)
	}
	if _, err := ts.kv.Put(ctx, &pb.PutRequest{Key: []byte("foo1"), Value: []byte(big)}); err != nil {
		t.Fatalf("put below the quota: %v", err)
	}
	// No wait: the first put is in the memtable, not in a table yet.
	if _, err := ts.kv.Put(ctx, &pb.PutRequest{Key: []byte("foo2"), Value: []byte(big)}); rpctypes.Error(err) != rpctypes.ErrNoSpace {
		t.Fatalf("put over the quota at once: %v, want %v (quota's size %d)", err, rpctypes.ErrNoSpace, ts.s.rpc.QuotaSize())
	}
	// Measured again (as etcd's test, a second later), the put still counts.
	time.Sleep(3 * quotaCheckInterval)
	if size := ts.s.rpc.QuotaSize(); size < int64(len(big)) {
		t.Fatalf("measured size %d after a put of %d bytes", size, len(big))
	}
	if _, err := ts.kv.Put(ctx, &pb.PutRequest{Key: []byte("foo2"), Value: []byte(big)}); rpctypes.Error(err) != rpctypes.ErrNoSpace {
		t.Fatalf("put over the quota: %v, want %v (quota's size %d)", err, rpctypes.ErrNoSpace, ts.s.rpc.QuotaSize())
	}
	if err := rpctypes.Error(errFromTxn(ts, ctx, big)); err != rpctypes.ErrNoSpace {
		t.Fatalf("txn over the quota: %v, want %v", err, rpctypes.ErrNoSpace)
	}
	alarms, err := pb.NewMaintenanceClient(ts.conn).Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_GET})
	if err != nil || len(alarms.Alarms) != 1 || alarms.Alarms[0].Alarm != pb.AlarmType_NOSPACE {
		t.Fatalf("alarms after the refused put: %v %v", alarms, err)
	}
	// Reads, deletes and small puts' refusal are the NOSPACE cycle's
	// (tests/ops); here only that a read-only txn is not charged.
	if _, err := ts.kv.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("foo1")}}}}}); err != nil {
		t.Fatalf("read-only txn: %v", err)
	}
	if got := ts.s.rpc.QuotaReserved(); got != 0 {
		t.Fatalf("%d bytes still reserved after every request ended", got)
	}
}

func errFromTxn(ts *testServer, ctx context.Context, v string) error {
	_, err := ts.kv.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{
		RequestPut: &pb.PutRequest{Key: []byte("t"), Value: []byte(v)},
	}}}})
	return err
}

// TestQuotaBurstCannotOvershoot: concurrent puts that each fit alone but
// not together are not all admitted by the same check.
func TestQuotaBurstCannotOvershoot(t *testing.T) {
	const quota, value, writers = 4 << 20, 1 << 20, 8
	ts := startTestServer(t, func(c *config.Config) { c.Limits.QuotaBackendBytes = quota })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := ts.s.rpc.QuotaSize()
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, full := 0, 0
	release := make(chan struct{})
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-release
			_, err := ts.kv.Put(ctx, &pb.PutRequest{Key: []byte{'k', byte('0' + i)}, Value: make([]byte, value)})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(rpctypes.Error(err), rpctypes.ErrNoSpace):
				full++
			default:
				t.Errorf("put: %v", err)
			}
		}()
	}
	close(release)
	wg.Wait()
	if fit := int((quota - start) / (value + 256 + 2)); ok > fit || ok == 0 || ok+full != writers {
		t.Fatalf("%d puts admitted, %d refused; at most %d fit in the quota from %d bytes", ok, full, fit, start)
	}
	// NB: measured afresh: QuotaSize may count a batch twice for a moment
	// when it commits while the quota loop measures (never zero times).
	if size := ts.s.rpc.MeasureSpace(); size >= quota+value {
		t.Fatalf("size %d after the burst, quota %d", size, quota)
	}
}
