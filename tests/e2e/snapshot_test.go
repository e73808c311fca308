package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/tests/framework"
)

// TestSnapshotSaveRestore: the real `etcdctl snapshot save` accepts
// metastore's snapshot stream (512·n + 32 bytes with a SHA-256 trailer);
// `metastore snapshot restore` brings it back into a new data directory, and
// the server started there has the same HashKV, revision and compaction, and
// a new member id, as etcdutl's restore gives.
func TestSnapshotSaveRestore(t *testing.T) {
	if framework.OnlyEtcd() {
		t.Skip("metastore's snapshot format and restore command")
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := framework.StartMetastoreProcess(t, t.TempDir())
	cli := framework.NewClient(t, p.Endpoint)
	kv := pb.NewKVClient(cli.ActiveConnection())
	for i := range 300 {
		k := fmt.Sprintf("key/%03d", i%120)
		if i%7 == 6 {
			if _, err := kv.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte(k)}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte(k), Value: []byte(strings.Repeat("v", i))}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kv.Compact(ctx, &pb.CompactionRequest{Revision: 100, Physical: true}); err != nil {
		t.Fatal(err)
	}
	// The member set is not restored: the restored member starts a new
	// one-member cluster, as etcdutl's restore makes one.
	if _, err := pb.NewClusterClient(cli.ActiveConnection()).MemberAdd(ctx, &pb.MemberAddRequest{PeerURLs: []string{"http://10.0.0.9:2380"}, IsLearner: true}); err != nil {
		t.Fatal(err)
	}
	mc := pb.NewMaintenanceClient(cli.ActiveConnection())
	before, err := mc.HashKV(ctx, &pb.HashKVRequest{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := mc.Status(ctx, &pb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}

	file := filepath.Join(t.TempDir(), "backup.db")
	res := framework.Etcdctl(t, p.Endpoint, "", "snapshot", "save", file)
	if res.ExitCode != 0 || !strings.Contains(res.Stdout, "Snapshot saved at "+file) {
		t.Fatalf("etcdctl snapshot save: exit %d\n%s\n%s", res.ExitCode, res.Stdout, res.Stderr)
	}
	if !strings.Contains(res.Stdout, "Server version 3.6.0") {
		t.Errorf("etcdctl did not report the server version:\n%s", res.Stdout)
	}
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size()%512 != 32 {
		t.Fatalf("snapshot size %d is not 512·n + 32", fi.Size())
	}
	p.Stop()

	restored := filepath.Join(t.TempDir(), "restored")
	out, err := exec.Command(framework.MetastoreBinary(t), "snapshot", "restore", file, "--data-dir", restored).CombinedOutput()
	if err != nil {
		t.Fatalf("metastore snapshot restore: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), fmt.Sprintf("at revision %d", before.Header.Revision)) {
		t.Errorf("restore output: %s", out)
	}
	// Restoring over existing data is refused.
	if out, err := exec.Command(framework.MetastoreBinary(t), "snapshot", "restore", file, "--data-dir", restored).CombinedOutput(); err == nil {
		t.Errorf("restore into a non-empty directory succeeded: %s", out)
	}

	q := framework.StartMetastoreProcess(t, restored)
	cli2 := framework.NewClient(t, q.Endpoint)
	mc2 := pb.NewMaintenanceClient(cli2.ActiveConnection())
	after, err := mc2.HashKV(ctx, &pb.HashKVRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if after.Hash != before.Hash || after.HashRevision != before.HashRevision || after.CompactRevision != 100 || after.Header.Revision != before.Header.Revision {
		t.Fatalf("restored HashKV %+v, want %+v", after, before)
	}
	st2, err := mc2.Status(ctx, &pb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st2.Header.MemberId == st.Header.MemberId || st2.Header.ClusterId == st.Header.ClusterId {
		t.Errorf("restore must create a new cluster: ids %x/%x unchanged", st2.Header.ClusterId, st2.Header.MemberId)
	}
	ml, err := pb.NewClusterClient(framework.NewClient(t, q.Endpoint).ActiveConnection()).MemberList(ctx, &pb.MemberListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ml.Members) != 1 || ml.Members[0].ID != st2.Header.MemberId || ml.Members[0].IsLearner {
		t.Errorf("restored members = %v, want only the new member %x", ml.Members, st2.Header.MemberId)
	}
	got := framework.Etcdctl(t, q.Endpoint, "", "get", "key/005")
	if got.ExitCode != 0 || !strings.Contains(got.Stdout, "key/005") {
		t.Fatalf("get after restore: %+v", got)
	}
}
