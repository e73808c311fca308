package ops

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/metastore-dev/metastore/server/config"
	"github.com/metastore-dev/metastore/tests/framework"
)

// TestNoSpaceCycle: past --quota-backend-bytes the NOSPACE alarm is raised;
// puts fail with etcd's "database space exceeded" while reads, deletes and
// compaction work; after freeing space (delete, compact, defragment) and
// `alarm disarm`, puts work again.
func TestNoSpaceCycle(t *testing.T) {
	t.Parallel()
	const quota = 4 << 20
	m := framework.StartMetastoreConfig(t, func(c *config.Config) { c.Limits.QuotaBackendBytes = quota })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cli := m.Client(t)
	val := strings.Repeat("x", 256<<10)
	var full error
	for i := 0; i < 200 && full == nil; i++ {
		_, full = cli.Put(ctx, "big/"+string(rune('a'+i%26))+strings.Repeat("z", i/26), val)
		if full == nil {
			time.Sleep(5 * time.Millisecond) // let the quota check see the growth
		}
	}
	if !errors.Is(full, rpctypes.ErrNoSpace) {
		t.Fatalf("writing past the quota: %v, want %v", full, rpctypes.ErrNoSpace)
	}
	alarms, err := cli.AlarmList(ctx)
	if err != nil || len(alarms.Alarms) != 1 || alarms.Alarms[0].Alarm != pb.AlarmType_NOSPACE {
		t.Fatalf("alarm list: %v %v", alarms, err)
	}
	st, err := cli.Status(ctx, m.Endpoint)
	if err != nil || len(st.Errors) != 1 || !strings.Contains(st.Errors[0], "NOSPACE") || st.DbSizeQuota != quota {
		t.Fatalf("status: %+v %v", st, err)
	}
	if _, err := cli.Txn(ctx).Then(clientv3.OpPut("t", "v")).Commit(); !errors.Is(err, rpctypes.ErrNoSpace) {
		t.Fatalf("txn put under NOSPACE: %v", err)
	}
	if _, err := cli.Get(ctx, "big/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil {
		t.Fatalf("read under NOSPACE: %v", err)
	}
	del, err := cli.Delete(ctx, "big/", clientv3.WithPrefix())
	if err != nil || del.Deleted == 0 {
		t.Fatalf("delete under NOSPACE: %v %v", del, err)
	}
	if _, err := cli.Compact(ctx, del.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("compact under NOSPACE: %v", err)
	}
	if _, err := cli.Defragment(ctx, m.Endpoint); err != nil {
		t.Fatalf("defragment: %v", err)
	}
	st, _ = cli.Status(ctx, m.Endpoint)
	if st.DbSize >= quota {
		t.Fatalf("db size %d after delete, compact and defragment; quota %d", st.DbSize, quota)
	}
	if _, err := cli.AlarmDisarm(ctx, &clientv3.AlarmMember{MemberID: alarms.Alarms[0].MemberID, Alarm: pb.AlarmType_NOSPACE}); err != nil {
		t.Fatalf("disarm: %v", err)
	}
	if _, err := cli.Put(ctx, "after", "v"); err != nil {
		t.Fatalf("put after disarm: %v", err)
	}
	time.Sleep(300 * time.Millisecond) // several quota checks
	if a, _ := cli.AlarmList(ctx); len(a.Alarms) != 0 {
		t.Fatalf("alarm raised again below the quota: %v", a.Alarms)
	}
}
