package server

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/metastore-dev/metastore/mvcc"
	"github.com/metastore-dev/metastore/server/config"
)

// corruptValue alters the stored value of key's newest version in the
// stopped member's data directory in place, as a bad disk would: the last
// byte of the value changes, nothing else (revision, version, change log).
func corruptValue(t *testing.T, dir, key string) {
	t.Helper()
	store, err := mvcc.Open(dir, mvcc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := store.Close(); err != nil {
			t.Fatal(err)
		}
	}()
	db := store.DB()
	// mvcc's version key: 'k' key 0x00 0x01 ^rev (the key has no 0x00).
	prefix := append([]byte("k"+key), 0, 1)
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: append(bytes.Clone(prefix[:len(prefix)-1]), 2)})
	if err != nil {
		t.Fatal(err)
	}
	if !it.First() {
		t.Fatalf("no version of %q", key)
	}
	k := bytes.Clone(it.Key())
	v := bytes.Clone(it.Value())
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	v[len(v)-1] ^= 1
	if err := db.Set(k, v, pebble.Sync); err != nil {
		t.Fatal(err)
	}
}

// waitApplied waits until every member serves key with value (a
// serializable read: its own applied state).
func waitApplied(t *testing.T, ms []*clusterMember, key, value string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for _, m := range ms {
		for get(t, m, key, true) != value {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not apply %s=%s", m.name, key, value)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// TestInitialCorruptCheck: with InitialCorruptCheck, a member whose stored
// value was altered while it was stopped refuses to start (etcd's error);
// an intact member restarts.
func TestInitialCorruptCheck(t *testing.T) {
	cfgs := clusterConfigs(t, 3)
	var ms []*clusterMember
	for _, cfg := range cfgs {
		cfg.Cluster.InitialCorruptCheck = true
		ms = append(ms, startMember(t, cfg))
	}
	lead := waitLeader(t, ms)
	for i := range 10 {
		put(t, ms[lead], fmt.Sprintf("k%d", i), "v")
	}
	put(t, ms[lead], "victim", "aaaa")
	waitApplied(t, ms, "victim", "aaaa")
	fs := others(ms, lead)

	// An intact member restarts (the check passes).
	fs[0].stop(t)
	ms[ms0index(ms, fs[0])] = startMember(t, fs[0].cfg)

	f := fs[1]
	f.stop(t)
	corruptValue(t, f.cfg.DataDir, "victim")
	_, err := New(f.cfg, nil)
	if err == nil || !strings.HasSuffix(err.Error(), "found data inconsistency with peers") {
		t.Fatalf("start of the corrupted member: %v", err)
	}
	// Without the check it starts (etcd's default), and serves the bad
	// value: what the periodic check is for.
	cfg := *f.cfg
	cfg.Cluster.InitialCorruptCheck = false
	m := startMember(t, &cfg)
	if got := get(t, m, "victim", true); got != "aaa`" {
		t.Fatalf("corrupted value reads %q", got)
	}
}

func ms0index(ms []*clusterMember, m *clusterMember) int {
	for i, x := range ms {
		if x == m {
			return i
		}
	}
	return -1
}

// TestCorruptAlarm: the leader's periodic HashKV check, and its
// compaction hash check, find a follower whose data was altered while it
// was stopped and raise the CORRUPT alarm for it; writes and lease grants
// are then refused with etcd's error on every member, reads go on.
func TestCorruptAlarm(t *testing.T) {
	for _, tc := range []struct {
		name      string
		configure func(*config.Config)
		// compact: the check compares compaction hashes, so compact
		// after the corrupted member is back.
		compact bool
	}{
		{"periodic", func(c *config.Config) { c.Cluster.CorruptCheckTime = 100 * time.Millisecond }, false},
		{"compact-hash", func(c *config.Config) {
			c.Cluster.CompactHashCheck, c.Cluster.CompactHashCheckTime = true, 100*time.Millisecond
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfgs := clusterConfigs(t, 3)
			var ms []*clusterMember
			for _, cfg := range cfgs {
				tc.configure(cfg)
				ms = append(ms, startMember(t, cfg))
			}
			lead := waitLeader(t, ms)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			put(t, ms[lead], "pre", "p") // revision 2
			if tc.compact {
				// A compaction hash of the intact cluster, compared.
				if _, err := ms[lead].kv.Compact(ctx, &pb.CompactionRequest{Revision: 2, Physical: true}); err != nil {
					t.Fatal(err)
				}
			}
			put(t, ms[lead], "victim", "aaaa") // 3
			put(t, ms[lead], "other", "x")     // 4
			waitApplied(t, ms, "other", "x")
			// No false alarm on an intact cluster.
			time.Sleep(500 * time.Millisecond)
			if al, err := ms[lead].maint.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_GET}); err != nil || len(al.Alarms) != 0 {
				t.Fatalf("alarms on an intact cluster: %v %v", al, err)
			}

			i := (lead + 1) % 3
			f := ms[i]
			victim := f.s.ids.Member
			f.stop(t)
			corruptValue(t, f.cfg.DataDir, "victim")
			ms[i] = startMember(t, f.cfg)
			lead = waitLeader(t, ms)
			if tc.compact {
				// (The periodic check, off here, may raise the alarm
				// before any further write.)
				put(t, ms[lead], "after", "restart") // 5
				waitApplied(t, ms, "after", "restart")
				if _, err := ms[lead].kv.Compact(ctx, &pb.CompactionRequest{Revision: 5, Physical: true}); err != nil {
					t.Fatal(err)
				}
			}
			var al *pb.AlarmResponse
			for {
				var err error
				al, err = ms[lead].maint.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_GET})
				if err != nil {
					t.Fatal(err)
				}
				if len(al.Alarms) > 0 {
					break
				}
				if ctx.Err() != nil {
					t.Fatal("no CORRUPT alarm")
				}
				time.Sleep(50 * time.Millisecond)
			}
			if len(al.Alarms) != 1 || al.Alarms[0].Alarm != pb.AlarmType_CORRUPT || al.Alarms[0].MemberID != victim {
				t.Fatalf("alarms %v, want CORRUPT for %x", al.Alarms, victim)
			}
			for _, m := range ms {
				_, err := m.kv.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte("v")})
				if err == nil || err.Error() != rpctypes.ErrGRPCCorrupt.Error() {
					t.Fatalf("%s: put under CORRUPT: %v, want %v", m.name, err, rpctypes.ErrGRPCCorrupt)
				}
			}
			if _, err := ms[lead].lease.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 60}); err == nil || err.Error() != rpctypes.ErrGRPCCorrupt.Error() {
				t.Fatalf("lease grant under CORRUPT: %v", err)
			}
			if got := get(t, ms[lead], "other", false); got != "x" {
				t.Fatalf("read under CORRUPT: %q", got)
			}
			if v := alarmMetric(t, ms[lead], "CORRUPT"); v != 1 {
				t.Fatalf("metastore_alarms_active{alarm=CORRUPT} = %v", v)
			}
		})
	}
}

// alarmMetric reads metastore_alarms_active{alarm=name} from m's registry.
func alarmMetric(t *testing.T, m *clusterMember, name string) float64 {
	t.Helper()
	fams, err := m.s.metrics.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != "metastore_alarms_active" {
			continue
		}
		for _, mt := range f.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "alarm" && l.GetValue() == name {
					return mt.GetGauge().GetValue()
				}
			}
		}
	}
	return -1
}
