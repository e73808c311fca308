package migrate

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/tests/framework"
)

// TestMigrateFromEtcd34 and TestMigrateFromEtcd35: the history of
// TestMigrateRoundTrip written to a real etcd 3.4 / 3.5 server (built from
// its own module under tools/) and a NOSPACE alarm, saved with that
// release's etcdctl, restored with `metastore snapshot restore` and
// compared with the source; the same snapshot restored by the release's own
// etcdctl into the release's etcd and compared with metastore at every
// revision (HashKV at the compacted revision included where the release
// answers it); metastore's snapshot restored by the release's etcdctl into
// its etcd, the same again; the stopped source's member/snap/db restored
// with --skip-hash-check; then (midCompaction) a snapshot saved while the
// release is compacting.
//
// They run when METASTORE_MIGRATE_RELEASES is set (`make test-migrate-old`):
// building the two releases from a cold build cache costs minutes.
func TestMigrateFromEtcd34(t *testing.T) {
	migrateFromRelease(t, "etcd34", "3.4.16")
	t.Run("mid-compaction", func(t *testing.T) { midCompaction(t, "etcd34") })
}

func TestMigrateFromEtcd35(t *testing.T) {
	migrateFromRelease(t, "etcd35", "3.5.36")
	t.Run("mid-compaction", func(t *testing.T) { midCompaction(t, "etcd35") })
}

const releasesEnv = "METASTORE_MIGRATE_RELEASES"

func migrateFromRelease(t *testing.T, name, version string) {
	if framework.OnlyEtcd() {
		t.Skip("a migration to metastore")
	}
	if v := os.Getenv(releasesEnv); v == "" || v == "0" {
		t.Skipf("builds etcd %s from its module: set %s=1 or run make test-migrate-old", version, releasesEnv)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rel := framework.BuildEtcdRelease(t, name)
	dir := t.TempDir()
	srcDir := filepath.Join(dir, "source")
	// The password hashes move as they are; bcrypt's lowest cost keeps each
	// login (one per client, several per hop) from costing a second under -race.
	src := rel.Start(t, srcDir, 0, "--bcrypt-cost", "4")
	st, err := pb.NewMaintenanceClient(client(t, src.Endpoint, false).ActiveConnection()).Status(ctx, &pb.StatusRequest{})
	if err != nil || st.Version != version {
		t.Fatalf("source etcd version %q (want %s): %v", st.GetVersion(), version, err)
	}
	start := time.Now()
	compactAt := buildHistory(t, ctx, client(t, src.Endpoint, false))
	want := collect(t, ctx, src.Endpoint)
	t.Logf("etcd %s: history of %d revisions written and read in %v", version, want.Rev, time.Since(start).Round(time.Millisecond))
	if want.Compact != compactAt || len(want.Leases) != 2 || !want.Auth || len(want.Users) != 3 || len(want.Roles) != 2 {
		t.Fatalf("source: compacted %d (want %d), %d leases, auth %v, users %v, roles %v", want.Compact, compactAt, len(want.Leases), want.Auth, want.Users, want.Roles)
	}
	rootAsEtcd36(t, want)
	// A NOSPACE alarm on the source is kept in its database; a restore
	// drops it (it was about the old member's disk), so the restored store
	// takes writes.
	mc := pb.NewMaintenanceClient(client(t, src.Endpoint, true).ActiveConnection())
	if _, err := mc.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, MemberID: st.Header.MemberId, Alarm: pb.AlarmType_NOSPACE}); err != nil {
		t.Fatal(err)
	}
	if a, err := mc.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_GET}); err != nil || len(a.Alarms) != 1 {
		t.Fatalf("source alarms %v: %v", a, err)
	}

	snap := filepath.Join(dir, name+".db")
	res := rel.Ctl(t, src.Endpoint, "--user=root:"+rootPassword, "snapshot", "save", snap)
	if res.ExitCode != 0 || !strings.Contains(res.Stdout, "Snapshot saved at "+snap) {
		t.Fatalf("%s etcdctl snapshot save: exit %d\n%s\n%s", name, res.ExitCode, res.Stdout, res.Stderr)
	}
	// The auth revision as the release stored it (3.4 cannot report it;
	// for 3.5 the file must agree with AuthStatus).
	fileAuthRev := snapshotAuthRevision(t, snap)
	if want.AuthRev == 0 {
		want.AuthRev = fileAuthRev
	} else if want.AuthRev != fileAuthRev {
		t.Fatalf("auth revision %d in AuthStatus, %d in the snapshot", want.AuthRev, fileAuthRev)
	}
	// The deletion at the compacted revision: etcd up to 3.4.33 and 3.5.15
	// dropped its tombstone when compacting, later releases keep it, so a
	// 3.4.16 snapshot lacks that revision and a 3.5.36 one holds it.
	if has, want := snapshotHasRevision(t, snap, compactAt), name != "etcd34"; has != want {
		t.Fatalf("etcd %s's snapshot holds revision %d: %v, want %v", version, compactAt, has, want)
	}
	res = rel.Ctl(t, "", "snapshot", "status", snap, "-w", "json")
	var status struct{ Revision int64 }
	if err := json.Unmarshal([]byte(res.Stdout), &status); err != nil || status.Revision != want.Rev {
		t.Fatalf("%s etcdctl snapshot status: revision %d (want %d), %v\n%s%s", name, status.Revision, want.Rev, err, res.Stdout, res.Stderr)
	}

	// etcd 3.x → metastore. A 3.5 source answers HashKV at its last
	// compaction from the hash it took while compacting (against the
	// previous one), a 3.4 source not at all: that revision is compared
	// with the restored release below.
	live := map[int64]bool{compactAt: true}
	msDir := filepath.Join(dir, "metastore")
	out, err := metastoreRestore(t, snap, msDir)
	if err != nil {
		t.Fatalf("metastore snapshot restore of etcd %s's snapshot: %v\n%s", version, err, out)
	}
	if !strings.Contains(out, fmt.Sprintf("at revision %d", want.Rev)) {
		t.Errorf("restore output: %s", out)
	}
	ms := framework.StartMetastoreProcess(t, msDir)
	got := collect(t, ctx, ms.Endpoint)
	compare(t, "etcd "+version+" → metastore", got, want, live)
	t.Logf("etcd %s → metastore: restored and compared at %v", version, time.Since(start).Round(time.Millisecond))
	if _, ok := got.Hash[compactAt]; !ok {
		t.Errorf("metastore has no HashKV at the compacted revision %d", compactAt)
	}
	checkPasswords(t, ms.Endpoint)

	// The release restores its own snapshot: the same state, and, with no
	// cached compaction hash, the same HashKV as metastore at every
	// revision it answers.
	fresh := releaseRestore(t, ctx, rel, snap, filepath.Join(dir, "restored"))
	compare(t, "etcd "+version+" → etcd "+version, fresh, want, live)
	skip := map[int64]bool{}
	if _, ok := fresh.Hash[compactAt]; !ok {
		if name != "etcd34" {
			t.Fatalf("etcd %s answered no HashKV at the compacted revision", version)
		}
		skip[compactAt] = true
	}
	compare(t, "metastore vs etcd "+version+" restored", got, fresh, skip)
	t.Logf("etcd %s's own restore compared at %v", version, time.Since(start).Round(time.Millisecond))

	// And back: the release's etcdctl saves metastore's snapshot and
	// restores it into the release's etcd, which serves the same state.
	msSnap := filepath.Join(dir, "metastore.db")
	res = rel.Ctl(t, ms.Endpoint, "--user=root:"+rootPassword, "snapshot", "save", msSnap)
	if res.ExitCode != 0 || !strings.Contains(res.Stdout, "Snapshot saved at "+msSnap) {
		t.Fatalf("%s etcdctl snapshot save from metastore: exit %d\n%s\n%s", name, res.ExitCode, res.Stdout, res.Stderr)
	}
	compare(t, "etcd "+version+" → metastore → etcd "+version, releaseRestore(t, ctx, rel, msSnap, filepath.Join(dir, "back")), fresh, nil)
	t.Logf("metastore → etcd %s compared at %v", version, time.Since(start).Round(time.Millisecond))

	msRoot := client(t, ms.Endpoint, true).ActiveConnection()
	if a, err := pb.NewMaintenanceClient(msRoot).Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_GET}); err != nil || len(a.Alarms) != 0 {
		t.Errorf("alarms after the restore %v: %v", a, err)
	}
	if _, err := pb.NewKVClient(msRoot).Put(ctx, &pb.PutRequest{Key: []byte("after-restore"), Value: []byte("1")}); err != nil {
		t.Errorf("a put after the restore: %v", err)
	}

	// The stopped source's member/snap/db: no trailer, so refused without
	// --skip-hash-check and restored with it.
	if err := src.Stop(); err != nil {
		t.Fatalf("stopping etcd %s: %v", version, err)
	}
	memberDB := filepath.Join(dir, "member-db")
	copyFile(t, filepath.Join(srcDir, "member", "snap", "db"), memberDB)
	if msg, err := metastoreRestore(t, memberDB, filepath.Join(dir, "refused")); err == nil || !strings.Contains(msg, "--skip-hash-check") {
		t.Errorf("member/snap/db without --skip-hash-check: err %v, output %q", err, msg)
	}
	fromDB := filepath.Join(dir, "from-member-db")
	if msg, err := metastoreRestore(t, memberDB, fromDB, "--skip-hash-check"); err != nil {
		t.Fatalf("etcd %s member/snap/db with --skip-hash-check: %v\n%s", version, err, msg)
	}
	ms2 := framework.StartMetastoreProcess(t, fromDB)
	compare(t, "etcd "+version+" member/snap/db → metastore", collect(t, ctx, ms2.Endpoint), got, nil)
	t.Logf("member/snap/db compared at %v", time.Since(start).Round(time.Millisecond))
}

// midCompaction: a snapshot saved while the release is still compacting
// (etcd compacts in batches; one revision per batch, with etcd's 10 ms
// between batches, makes it last seconds) holds the scheduled compaction
// revision but not the finished one, and the versions below it only partly
// removed. Restored into metastore it reads as compacted at the scheduled
// revision, with the source's keys, revisions and HashKV above it, as etcd
// itself finishes such a compaction when it restarts.
func midCompaction(t *testing.T, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rel := framework.BuildEtcdRelease(t, name)
	dir := t.TempDir()
	src := rel.Start(t, filepath.Join(dir, "source"), 0, "--experimental-compaction-batch-limit", "1")
	kv := pb.NewKVClient(client(t, src.Endpoint, false).ActiveConnection())
	var compactAt int64
	for i := range 1200 {
		var rev int64
		if i%50 == 49 {
			r, err := kv.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte(fmt.Sprintf("k%02d", i%40))})
			if err != nil {
				t.Fatal(err)
			}
			rev = r.Header.Revision
		} else {
			r, err := kv.Put(ctx, &pb.PutRequest{Key: []byte(fmt.Sprintf("k%02d", i%40)), Value: []byte(fmt.Sprint(i))})
			if err != nil {
				t.Fatal(err)
			}
			rev = r.Header.Revision
		}
		if i == 1150 {
			compactAt = rev
		}
	}
	if _, err := kv.Compact(ctx, &pb.CompactionRequest{Revision: compactAt}); err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(dir, "mid.db")
	if res := rel.Ctl(t, src.Endpoint, "snapshot", "save", snap); res.ExitCode != 0 {
		t.Fatalf("%s etcdctl snapshot save: exit %d\n%s\n%s", name, res.ExitCode, res.Stdout, res.Stderr)
	}
	scheduled, finished := snapshotCompaction(t, snap)
	if scheduled != compactAt || finished >= compactAt {
		t.Fatalf("the snapshot was not taken mid-compaction: scheduled %d, finished %d, compaction at %d", scheduled, finished, compactAt)
	}
	// A version the compaction removes (overwritten 40 revisions later),
	// late enough in the key bucket not to be reached yet.
	if !snapshotHasRevision(t, snap, compactAt-45) {
		t.Fatalf("the snapshot lacks revision %d: the compaction got there first", compactAt-45)
	}
	want := collect(t, ctx, src.Endpoint)
	if want.Compact != compactAt {
		t.Fatalf("source compacted at %d, want %d", want.Compact, compactAt)
	}
	if want.AuthRev == 0 { // etcd 3.4
		want.AuthRev = snapshotAuthRevision(t, snap)
	}
	out, err := metastoreRestore(t, snap, filepath.Join(dir, "metastore"))
	if err != nil {
		t.Fatalf("restore of a snapshot taken mid-compaction: %v\n%s", err, out)
	}
	ms := framework.StartMetastoreProcess(t, filepath.Join(dir, "metastore"))
	compare(t, name+" mid-compaction → metastore", collect(t, ctx, ms.Endpoint), want, map[int64]bool{compactAt: true})
}

// snapshotCompaction reads etcd's scheduled and finished compaction
// revisions (-1 when absent) from file's meta bucket.
func snapshotCompaction(t *testing.T, file string) (scheduled, finished int64) {
	t.Helper()
	db, err := bolt.Open(file, 0o400, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	scheduled, finished = -1, -1
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("meta"))
		if b == nil {
			return fmt.Errorf("no meta bucket")
		}
		if v := b.Get([]byte("scheduledCompactRev")); len(v) >= 8 {
			scheduled = int64(binary.BigEndian.Uint64(v))
		}
		if v := b.Get([]byte("finishedCompactRev")); len(v) >= 8 {
			finished = int64(binary.BigEndian.Uint64(v))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return scheduled, finished
}

// releaseRestore restores file with the release's etcdctl into dataDir,
// starts the release's etcd there and collects its state (the auth revision
// of etcd 3.4, which cannot report it, from its database once stopped).
func releaseRestore(t *testing.T, ctx context.Context, rel framework.EtcdRelease, file, dataDir string) *state {
	t.Helper()
	peer := framework.StablePort(t)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peer)
	res := rel.Ctl(t, "", "snapshot", "restore", file, "--name", "default", "--data-dir", dataDir,
		"--initial-cluster", "default="+peerURL, "--initial-advertise-peer-urls", peerURL)
	if res.ExitCode != 0 {
		t.Fatalf("%s etcdctl snapshot restore %s: exit %d\n%s\n%s", rel.Name, file, res.ExitCode, res.Stdout, res.Stderr)
	}
	p := rel.Start(t, dataDir, peer)
	st := collect(t, ctx, p.Endpoint)
	rootAsEtcd36(t, st)
	if st.AuthRev == 0 {
		if err := p.Stop(); err != nil {
			t.Fatal(err)
		}
		st.AuthRev = snapshotAuthRevision(t, filepath.Join(dataDir, "member", "snap", "db"))
	}
	return st
}

// rootAsEtcd36 makes the root role read as etcd 3.6 and metastore show it:
// RoleGet of root answers full access, where etcd 3.4 and 3.5 answer the
// role's stored permissions (none: root's power does not come from them).
func rootAsEtcd36(t *testing.T, st *state) {
	t.Helper()
	perms, ok := st.Roles["root"]
	if !ok {
		return
	}
	if len(perms) != 0 {
		if len(perms) == 1 && perms[0].PermType == authpb.READWRITE && len(perms[0].Key) == 0 && string(perms[0].RangeEnd) == "\x00" {
			return // a 3.6 answer
		}
		t.Fatalf("root role with stored permissions %v", perms)
	}
	st.Roles["root"] = []*authpb.Permission{{PermType: authpb.READWRITE, RangeEnd: []byte{0}}}
}

// snapshotHasRevision reports whether etcd's key bucket in file has an
// entry of main revision rev (keys are 8-byte big-endian main revisions,
// then '_', the sub revision and a 't' for a tombstone).
func snapshotHasRevision(t *testing.T, file string, rev int64) bool {
	t.Helper()
	db, err := bolt.Open(file, 0o400, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	prefix := binary.BigEndian.AppendUint64(nil, uint64(rev))
	var found bool
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("key"))
		if b == nil {
			return fmt.Errorf("no key bucket")
		}
		k, _ := b.Cursor().Seek(prefix)
		found = k != nil && bytes.HasPrefix(k, prefix)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// snapshotAuthRevision reads the auth revision etcd stored in its auth
// bucket (an 8-byte big-endian number), with bbolt directly, as a check
// independent of metastore's reader.
func snapshotAuthRevision(t *testing.T, file string) uint64 {
	t.Helper()
	db, err := bolt.Open(file, 0o400, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var rev uint64
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("auth"))
		if b == nil {
			return fmt.Errorf("no auth bucket")
		}
		v := b.Get([]byte("authRevision"))
		if len(v) != 8 {
			return fmt.Errorf("authRevision %x", v)
		}
		rev = binary.BigEndian.Uint64(v)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
