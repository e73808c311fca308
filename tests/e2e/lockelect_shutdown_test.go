package e2e

import (
	"context"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"

	"github.com/metastore-dev/metastore/tests/framework"
)

// TestShutdownWithBlockedLock: a Lock waiting for the holder, a Campaign
// waiting to lead and an Observe stream do not hold SIGTERM's graceful stop
// (which would otherwise wait 10s for them before forcing it).
func TestShutdownWithBlockedLock(t *testing.T) {
	if framework.OnlyEtcd() {
		t.Skip("metastore's shutdown")
	}
	t.Parallel()
	p := framework.StartMetastoreProcess(t, t.TempDir())
	cli := framework.NewClient(t, p.Endpoint)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lc := v3lockpb.NewLockClient(cli.ActiveConnection())
	ec := v3electionpb.NewElectionClient(cli.ActiveConnection())
	l1, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("l"), Lease: int64(l1.ID)}); err != nil {
		t.Fatal(err)
	}
	if _, err := ec.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte("e"), Lease: int64(l1.ID), Value: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	obs, err := ec.Observe(ctx, &v3electionpb.LeaderRequest{Name: []byte("e")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obs.Recv(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	go func() {
		_, err := lc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("l"), Lease: int64(l2.ID)})
		done <- err
	}()
	go func() {
		_, err := ec.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte("e"), Lease: int64(l2.ID), Value: []byte("b")})
		done <- err
	}()
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	if err := p.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("graceful stop took %v with blocked Lock/Campaign/Observe", took)
	}
	for range 2 {
		select {
		case err := <-done:
			if err == nil {
				t.Error("a blocked call succeeded across the shutdown")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a blocked call did not end")
		}
	}
}
