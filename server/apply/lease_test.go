package apply

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/metastore-dev/metastore/mvcc"
)

// recordingLessor is a Lessor that logs what the applier tells it.
type recordingLessor struct {
	live map[int64]int64
	log  []string
}

func newRecordingLessor() *recordingLessor { return &recordingLessor{live: map[int64]int64{}} }

func (r *recordingLessor) Exists(id int64) bool { _, ok := r.live[id]; return ok }
func (r *recordingLessor) Grant(id, ttl int64) {
	r.live[id] = ttl
	r.log = append(r.log, fmt.Sprintf("grant %d %d", id, ttl))
}
func (r *recordingLessor) Revoke(id int64) {
	delete(r.live, id)
	r.log = append(r.log, fmt.Sprintf("revoke %d", id))
}
func (r *recordingLessor) Checkpointed(id, rem int64) {
	r.log = append(r.log, fmt.Sprintf("checkpoint %d %d", id, rem))
}

func openStore(t *testing.T) *mvcc.Store {
	t.Helper()
	s, err := mvcc.Open("db", mvcc.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// applyBatch applies reqs in one batch and commits it (or aborts it).
func applyBatch(t *testing.T, s *mvcc.Store, a *Applier, commit bool, reqs ...*Request) ([]Result, []mvcc.RevisionEvents) {
	t.Helper()
	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	var out []Result
	for _, r := range reqs {
		out = append(out, a.Apply(b, r))
	}
	if !commit {
		b.Abort()
		return out, nil
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	return out, b.Events()
}

func grant(id, ttl int64) *Request {
	return &Request{LeaseGrant: &pb.LeaseGrantRequest{ID: id, TTL: ttl}}
}

func revoke(id int64) *Request { return &Request{LeaseRevoke: &pb.LeaseRevokeRequest{ID: id}} }

func putLease(key string, id int64) *Request {
	return &Request{Put: &pb.PutRequest{Key: []byte(key), Value: []byte("v"), Lease: id}}
}

func TestLeaseGrantChecks(t *testing.T) {
	s := openStore(t)
	le := newRecordingLessor()
	a, err := New(s, Options{Leases: le, MinLeaseTTL: 2})
	if err != nil {
		t.Fatal(err)
	}
	res, _ := applyBatch(t, s, a, true,
		grant(0, 10),
		grant(1, MaxLeaseTTL+1),
		grant(1, 1), // raised to the minimum
		grant(1, 10),
		grant(2, -5),
		grant(3, MaxLeaseTTL),
	)
	wantErr := []error{ErrLeaseNotFound, ErrLeaseTTLTooLarge, nil, ErrLeaseExist, nil, nil}
	wantTTL := []int64{0, 0, 2, 0, 2, MaxLeaseTTL}
	for i, r := range res {
		if !errors.Is(r.Err, wantErr[i]) || (wantErr[i] == nil && r.Err != nil) {
			t.Errorf("request %d: err %v, want %v", i, r.Err, wantErr[i])
			continue
		}
		if r.Err == nil {
			if got := r.Resp.(*pb.LeaseGrantResponse); got.TTL != wantTTL[i] || got.Header.Revision != 1 {
				t.Errorf("request %d: %v, want TTL %d at revision 1", i, got, wantTTL[i])
			}
		}
	}
	if want := []string{"grant 1 2", "grant 2 2", "grant 3 9000000000"}; !slices.Equal(le.log, want) {
		t.Errorf("lessor told %v, want %v", le.log, want)
	}
	// Persisted with the granted TTL.
	var loaded []string
	if err := LoadLeases(s, 5, func(id, ttl, rem int64) { loaded = append(loaded, fmt.Sprint(id, ttl, rem)) }); err != nil {
		t.Fatal(err)
	}
	if want := []string{"1 5 0", "2 5 0", "3 9000000000 0"}; !slices.Equal(loaded, want) {
		t.Errorf("LoadLeases (min TTL 5) = %v, want %v", loaded, want)
	}

	// No grants under the NOSPACE alarm, as etcd's capped applier.
	applyBatch(t, s, a, true, &Request{Alarm: &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, Alarm: pb.AlarmType_NOSPACE, MemberID: 1}})
	if res, _ := applyBatch(t, s, a, true, grant(9, 10)); !errors.Is(res[0].Err, ErrNoSpace) {
		t.Errorf("grant under NOSPACE: %v", res[0].Err)
	}
}

func TestLeaseChangesReachLessorOnlyWhenDurable(t *testing.T) {
	s := openStore(t)
	le := newRecordingLessor()
	a, err := New(s, Options{Leases: le, MinLeaseTTL: 2})
	if err != nil {
		t.Fatal(err)
	}
	// Within one batch, later requests see the batch's own grants and
	// revocations.
	res, _ := applyBatch(t, s, a, false, grant(1, 10), putLease("a", 1), revoke(1), putLease("b", 1))
	if res[1].Err != nil || !errors.Is(res[3].Err, ErrLeaseNotFound) {
		t.Fatalf("in-batch lease visibility: put after grant %v, put after revoke %v", res[1].Err, res[3].Err)
	}
	if len(le.log) != 0 || le.Exists(1) {
		t.Fatalf("aborted batch reached the lessor: %v", le.log)
	}
	// The aborted batch's pending state is gone.
	if res, _ := applyBatch(t, s, a, true, putLease("a", 1)); !errors.Is(res[0].Err, ErrLeaseNotFound) {
		t.Fatalf("put with a lease granted by an aborted batch: %v", res[0].Err)
	}
	applyBatch(t, s, a, true, grant(1, 10), putLease("a", 1))
	if want := []string{"grant 1 10"}; !slices.Equal(le.log, want) {
		t.Fatalf("lessor told %v, want %v", le.log, want)
	}
}

func TestLeaseRevokeDeletesKeysInOneRevision(t *testing.T) {
	s := openStore(t)
	le := newRecordingLessor()
	a, err := New(s, Options{Leases: le, MinLeaseTTL: 2})
	if err != nil {
		t.Fatal(err)
	}
	applyBatch(t, s, a, true, grant(1, 10), grant(2, 10))
	applyBatch(t, s, a, true, putLease("c", 1), putLease("a", 1), putLease("b", 1), putLease("z", 2))
	// "b" moves to lease 2; "c" loses its lease; "a" is deleted.
	applyBatch(t, s, a, true, putLease("b", 2), putLease("c", 0),
		&Request{DeleteRange: &pb.DeleteRangeRequest{Key: []byte("a")}}, putLease("d", 1), putLease("e", 1))
	rev := s.Rev()
	res, evs := applyBatch(t, s, a, true, revoke(1))
	if res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	if got := res[0].Resp.(*pb.LeaseRevokeResponse).Header.Revision; got != rev+1 {
		t.Errorf("revoke header revision %d, want %d", got, rev+1)
	}
	if len(evs) != 1 || evs[0].Rev != rev+1 {
		t.Fatalf("revoke produced %d revisions, want one at %d", len(evs), rev+1)
	}
	var deleted []string
	for _, ev := range evs[0].Events {
		if ev.Type != mvccpb.DELETE || ev.PrevKv == nil || ev.PrevKv.Lease != 1 {
			t.Errorf("event %v: want a DELETE of a key of lease 1", ev)
		}
		deleted = append(deleted, string(ev.Kv.Key))
	}
	if want := []string{"d", "e"}; !slices.Equal(deleted, want) {
		t.Errorf("revoke deleted %v, want %v (in key order)", deleted, want)
	}
	rr, err := s.Range(t.Context(), []byte("a"), []byte("zz"), mvcc.RangeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, kv := range rr.KVs {
		left = append(left, fmt.Sprintf("%s/%d", kv.Key, kv.Lease))
	}
	if want := []string{"b/2", "c/0", "z/2"}; !slices.Equal(left, want) {
		t.Errorf("keys left %v, want %v", left, want)
	}
	// A lease without keys is revoked without a new revision.
	rev = s.Rev()
	res, evs = applyBatch(t, s, a, true, grant(3, 10), revoke(3), revoke(3))
	if got := res[1].Resp.(*pb.LeaseRevokeResponse).Header.Revision; got != rev || len(evs) != 0 {
		t.Errorf("revoke of an empty lease: revision %d (want %d), %d event revisions", got, rev, len(evs))
	}
	if !errors.Is(res[2].Err, ErrLeaseNotFound) {
		t.Errorf("second revoke: %v, want ErrLeaseNotFound", res[2].Err)
	}
	var loaded []int64
	LoadLeases(s, 0, func(id, _, _ int64) { loaded = append(loaded, id) })
	if !slices.Equal(loaded, []int64{2}) {
		t.Errorf("leases left in the store %v, want [2]", loaded)
	}
}

func TestLeaseCheckpoint(t *testing.T) {
	s := openStore(t)
	le := newRecordingLessor()
	a, err := New(s, Options{Leases: le, MinLeaseTTL: 2})
	if err != nil {
		t.Fatal(err)
	}
	applyBatch(t, s, a, true, grant(1, 100), grant(2, 100), grant(3, 100))
	le.log = nil
	cp := &pb.LeaseCheckpointRequest{Checkpoints: []*pb.LeaseCheckpoint{
		{ID: 1, Remaining_TTL: 40}, {ID: 2, Remaining_TTL: 500}, {ID: 7, Remaining_TTL: 5}, {ID: 3, Remaining_TTL: -1},
	}}
	res, _ := applyBatch(t, s, a, true, &Request{LeaseCheckpoint: cp})
	if res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	if want := []string{"checkpoint 1 40", "checkpoint 2 0", "checkpoint 3 -1"}; !slices.Equal(le.log, want) {
		t.Errorf("lessor told %v, want %v", le.log, want)
	}
	var loaded []string
	LoadLeases(s, 2, func(id, ttl, rem int64) { loaded = append(loaded, fmt.Sprint(id, ttl, rem)) })
	if want := []string{"1 100 40", "2 100 0", "3 100 -1"}; !slices.Equal(loaded, want) {
		t.Errorf("persisted %v, want %v", loaded, want)
	}
}
