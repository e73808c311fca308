package compat

import (
	"context"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/status"

	"github.com/metastore-dev/metastore/tests/framework"
)

// TestHashKV: the fields and errors of HashKV as etcd gives them (the hash
// values themselves differ by design: etcd hashes bbolt's encoding). The
// hash is stable while nothing changes and changes with a write.
func TestHashKV(t *testing.T) {
	for _, b := range framework.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			srv := b.Start(t, framework.Options{})
			cli := srv.Client(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			kv := pb.NewKVClient(cli.ActiveConnection())
			mc := pb.NewMaintenanceClient(cli.ActiveConnection())
			for i := range 6 {
				if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte{'a' + byte(i%3)}, Value: []byte{byte(i)}}); err != nil {
					t.Fatal(err)
				}
			}
			// revision 7
			r, err := mc.HashKV(ctx, &pb.HashKVRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if r.Header.Revision != 7 || r.HashRevision != 7 || r.CompactRevision != -1 {
				t.Fatalf("HashKV(0): rev %d hash_revision %d compact_revision %d", r.Header.Revision, r.HashRevision, r.CompactRevision)
			}
			r2, _ := mc.HashKV(ctx, &pb.HashKVRequest{Revision: 7})
			if r2.Hash != r.Hash {
				t.Fatalf("HashKV(7) %d != HashKV(0) %d at revision 7", r2.Hash, r.Hash)
			}
			r3, _ := mc.HashKV(ctx, &pb.HashKVRequest{Revision: 5})
			if r3.Hash == r.Hash || r3.HashRevision != 5 || r3.Header.Revision != 7 {
				t.Fatalf("HashKV(5): %+v", r3)
			}
			wantErr := func(err, want error) {
				t.Helper()
				if s, w := status.Convert(err), status.Convert(want); s.Code() != w.Code() || s.Message() != w.Message() {
					t.Fatalf("got %v, want %v", err, want)
				}
			}
			_, err = mc.HashKV(ctx, &pb.HashKVRequest{Revision: 8})
			wantErr(err, rpctypes.ErrGRPCFutureRev)
			if _, err := kv.Compact(ctx, &pb.CompactionRequest{Revision: 4, Physical: true}); err != nil {
				t.Fatal(err)
			}
			_, err = mc.HashKV(ctx, &pb.HashKVRequest{Revision: 3})
			wantErr(err, rpctypes.ErrGRPCCompacted)
			// NB: not HashKV(4): etcd answers a compaction revision from the
			// hash it stored while compacting (compact_revision = the previous
			// compaction), which metastore does not keep yet.
			r4, err := mc.HashKV(ctx, &pb.HashKVRequest{Revision: 5})
			if err != nil || r4.CompactRevision != 4 || r4.HashRevision != 5 {
				t.Fatalf("HashKV above the compacted revision: %+v %v", r4, err)
			}
			h, err := mc.Hash(ctx, &pb.HashRequest{})
			if err != nil || h.Header.Revision != 7 {
				t.Fatalf("Hash: %+v %v", h, err)
			}
		})
	}
}
