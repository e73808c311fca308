package server

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/metastore-dev/metastore/server/config"
)

// TestQuotaDisarmedAlarmStaysOff is etcd's TestAuthAlarm's last step: a
// NOSPACE alarm disarmed while the database is still past the quota stays
// off until a write does not fit; the size poll does not raise it again.
// The quota is etcd's test's, 5 KiB, and, as there, users (which the
// quota does not charge) take the database past it.
func TestQuotaDisarmedAlarmStaysOff(t *testing.T) {
	ts := startTestServer(t, func(c *config.Config) {
		c.Limits.QuotaBackendBytes = 5 << 10
		c.Auth.BcryptCost = 4
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	maint := pb.NewMaintenanceClient(ts.conn)
	for i := 0; ts.s.rpc.MeasureSpace() <= ts.s.rpc.QuotaBytes(); i++ {
		if i == 1000 {
			t.Fatalf("1000 users and the database is still %d bytes", ts.s.rpc.MeasureSpace())
		}
		name := fmt.Sprintf("user-%d-%s", i, strings.Repeat("u", 200))
		if _, err := pb.NewAuthClient(ts.conn).UserAdd(ctx, &pb.AuthUserAddRequest{Name: name, Password: "pw"}); err != nil {
			t.Fatal(err)
		}
	}
	val := []byte(strings.Repeat("A", 1<<10))
	for i := 0; ; i++ {
		_, err := ts.kv.Put(ctx, &pb.PutRequest{Key: []byte{byte(i)}, Value: val})
		if err == nil {
			continue
		}
		if rpctypes.Error(err) != rpctypes.ErrNoSpace {
			t.Fatalf("put %d: %v, want %v", i, err, rpctypes.ErrNoSpace)
		}
		break
	}
	alarms := func() []*pb.AlarmMember {
		t.Helper()
		resp, err := maint.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_GET})
		if err != nil {
			t.Fatal(err)
		}
		return resp.Alarms
	}
	if a := alarms(); len(a) != 1 || a[0].Alarm != pb.AlarmType_NOSPACE {
		t.Fatalf("alarms after the refused put: %v", a)
	}
	if _, err := maint.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_DEACTIVATE, MemberID: ts.s.ids.Member, Alarm: pb.AlarmType_NOSPACE}); err != nil {
		t.Fatal(err)
	}
	if size, quota := ts.s.rpc.MeasureSpace(), ts.s.rpc.QuotaBytes(); size <= quota {
		t.Fatalf("database of %d bytes is no longer past the quota of %d: the test proves nothing", size, quota)
	}
	for range 10 {
		time.Sleep(quotaCheckInterval)
		if a := alarms(); len(a) != 0 {
			t.Fatalf("alarm raised again with no write: %v", a)
		}
	}
	if _, err := ts.kv.Put(ctx, &pb.PutRequest{Key: []byte("more"), Value: val}); rpctypes.Error(err) != rpctypes.ErrNoSpace {
		t.Fatalf("put past the quota after disarm: %v, want %v", err, rpctypes.ErrNoSpace)
	}
	if a := alarms(); len(a) != 1 || a[0].Alarm != pb.AlarmType_NOSPACE {
		t.Fatalf("alarms after the next refused put: %v", a)
	}
}

// TestQuotaSeesDefragAtOnce is etcd's TestAlarm: a put refused for space,
// compaction, defragmentation, disarm, then at once a small put, which
// fits: the defragmentation's smaller size is what the quota sees when
// Defragment returns, not after the next size poll.
func TestQuotaSeesDefragAtOnce(t *testing.T) {
	ts := startTestServer(t, func(c *config.Config) { c.Limits.QuotaBackendBytes = 13 * 4096 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	maint := pb.NewMaintenanceClient(ts.conn)
	val := []byte(strings.Repeat("b", 4096))
	var rev int64
	for i := 0; ; i++ {
		resp, err := ts.kv.Put(ctx, &pb.PutRequest{Key: []byte("big"), Value: val})
		if err == nil {
			rev = resp.Header.Revision
			continue
		}
		if rpctypes.Error(err) != rpctypes.ErrNoSpace || i == 0 {
			t.Fatalf("put %d: %v, want %v after some puts", i, err, rpctypes.ErrNoSpace)
		}
		break
	}
	if _, err := ts.kv.Compact(ctx, &pb.CompactionRequest{Revision: rev, Physical: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := maint.Defragment(ctx, &pb.DefragmentRequest{}); err != nil {
		t.Fatal(err)
	}
	if size, quota := ts.s.rpc.QuotaSize(), ts.s.rpc.QuotaBytes(); size+4096 > quota {
		t.Fatalf("right after the defrag the quota sees %d bytes of %d", size, quota)
	}
	if _, err := maint.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_DEACTIVATE, MemberID: ts.s.ids.Member, Alarm: pb.AlarmType_NOSPACE}); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.kv.Put(ctx, &pb.PutRequest{Key: []byte("small"), Value: []byte("a")}); err != nil {
		t.Fatalf("put after defrag and disarm: %v", err)
	}
}
