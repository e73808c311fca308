package cluster

import (
	"bytes"
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/metastore-dev/metastore/mvcc"
)

// corruptStoredValue alters the newest stored version of key in a stopped
// member's data directory in place, as a bad disk would: the value's last
// byte changes, nothing else.
func corruptStoredValue(t *testing.T, m *Member, key string) {
	t.Helper()
	switch m.c.Kind {
	case Etcd:
		db, err := bolt.Open(filepath.Join(m.DataDir, "member", "snap", "db"), 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		err = db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket([]byte("key"))
			var last, val []byte
			err := b.ForEach(func(k, v []byte) error {
				var kv mvccpb.KeyValue
				if kv.Unmarshal(v) == nil && string(kv.Key) == key {
					last, val = bytes.Clone(k), bytes.Clone(v)
				}
				return nil
			})
			if err != nil || last == nil {
				t.Fatalf("no version of %q: %v", key, err)
			}
			var kv mvccpb.KeyValue
			if err := kv.Unmarshal(val); err != nil {
				return err
			}
			kv.Value[len(kv.Value)-1] ^= 1
			raw, err := kv.Marshal()
			if err != nil {
				return err
			}
			return b.Put(last, raw)
		})
		if err != nil {
			t.Fatal(err)
		}
	case Metastore:
		store, err := mvcc.Open(m.DataDir, mvcc.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := store.Close(); err != nil {
				t.Fatal(err)
			}
		}()
		// mvcc's version key: 'k' key 0x00 0x01 ^rev, newest first.
		prefix := append([]byte("k"+key), 0, 1)
		it, err := store.DB().NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: append(bytes.Clone(prefix[:len(prefix)-1]), 2)})
		if err != nil {
			t.Fatal(err)
		}
		if !it.First() {
			t.Fatalf("no version of %q", key)
		}
		k, v := bytes.Clone(it.Key()), bytes.Clone(it.Value())
		if err := it.Close(); err != nil {
			t.Fatal(err)
		}
		v[len(v)-1] ^= 1
		if err := store.DB().Set(k, v, pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCorruptionCheck: etcd's corruption checks with its flags, on etcd
// then metastore. A follower whose stored value was altered while it was
// stopped refuses to restart with --feature-gates=InitialCorruptCheck=true
// ("found data inconsistency with peers"); restarted without it, the
// leader's periodic check (--corrupt-check-time) raises the CORRUPT alarm
// for it, and writes are refused with etcd's error while reads go on.
func TestCorruptionCheck(t *testing.T) {
	for _, kind := range Kinds() {
		t.Run(kind, func(t *testing.T) { corruptionCheck(t, kind) })
	}
}

func corruptionCheck(t *testing.T, kind string) {
	const gate = "--feature-gates=InitialCorruptCheck=true"
	c := Start(t, Config{Kind: kind, Extra: []string{gate, "--corrupt-check-time=1s"}})
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, kv := range [][2]string{{"victim", "aaaa"}, {"other", "x"}} {
		if _, err := cli.Put(ctx, kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.WaitConverged(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	leader, err := c.WaitLeader(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// A member restarted intact passes the check.
	intact := c.Followers(leader)[0]
	if err := intact.Stop(); err != nil {
		t.Fatal(err)
	}
	intact.Restart()

	f := c.Followers(leader)[1]
	st, err := f.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	victim := st.Header.MemberId
	if err := f.Stop(); err != nil {
		t.Fatal(err)
	}
	corruptStoredValue(t, f, "victim")
	f.Start()
	select {
	case <-f.Exited():
	case <-time.After(60 * time.Second):
		t.Fatal("the corrupted member started despite the initial check")
	}
	if !strings.Contains(f.Log(), "found data inconsistency with peers") {
		t.Fatalf("the corrupted member's log does not give etcd's reason:\n%s", tailString(f.Log(), 3000))
	}
	f.Kill() // reaped

	// Without the initial check it starts; the leader finds it.
	f.Args = slices.DeleteFunc(f.Args, func(a string) bool { return a == gate })
	f.Restart()
	var alarms []*etcdserverpb.AlarmMember
	for deadline := time.Now().Add(60 * time.Second); ; {
		ar, err := cli.AlarmList(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if alarms = ar.Alarms; len(alarms) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no alarm raised for the corrupted member")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(alarms) != 1 || alarms[0].Alarm != etcdserverpb.AlarmType_CORRUPT || alarms[0].MemberID != victim {
		t.Fatalf("alarms %v, want CORRUPT for %x", alarms, victim)
	}
	for _, m := range c.Members {
		pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := m.Client().Put(pctx, "after", "alarm")
		pcancel()
		if err == nil || err.Error() != rpctypes.ErrCorrupt.Error() {
			t.Errorf("%s: put under the CORRUPT alarm: %v, want %v", m, err, rpctypes.ErrCorrupt)
		}
	}
	if r, err := cli.Get(ctx, "other"); err != nil || len(r.Kvs) != 1 {
		t.Errorf("read under the CORRUPT alarm: %v %v", r, err)
	}
	if _, err := cli.Get(ctx, "other", clientv3.WithSerializable()); err != nil {
		t.Errorf("serializable read under the CORRUPT alarm: %v", err)
	}
}
