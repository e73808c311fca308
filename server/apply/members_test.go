package apply

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/membershippb"

	"github.com/metastore-dev/metastore/mvcc"
)

func openMembers(t *testing.T, dir string) (*mvcc.Store, *Applier) {
	t.Helper()
	st, err := mvcc.Open(dir, mvcc.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(st, Options{Self: &pb.Member{ID: 100, PeerURLs: []string{"http://self:2380"}}, MaxLearners: 1, ClusterVersion: "3.6.0"})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	return st, a
}

// TestConfChanges checks etcd's validation of every membership change, in
// etcd's order, and that the member set survives a reopen.
func TestConfChanges(t *testing.T) {
	dir := t.TempDir()
	st, a := openMembers(t, dir)
	apply := func(cc ConfChange) error {
		t.Helper()
		b, err := st.NewBatch()
		if err != nil {
			t.Fatal(err)
		}
		res := a.ApplyConfChange(b, &cc)
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		return res.Err
	}
	steps := []struct {
		cc   ConfChange
		want error
	}{
		{ConfChange{Type: ConfChangeAddLearner, ID: 7, PeerURLs: []string{"http://l:1"}}, nil},
		{ConfChange{Type: ConfChangeAddLearner, ID: 7, PeerURLs: []string{"http://other:1"}}, ErrIDExists},
		{ConfChange{Type: ConfChangeAddLearner, ID: 8, PeerURLs: []string{"http://l:1"}}, ErrPeerURLExists},
		{ConfChange{Type: ConfChangeAddLearner, ID: 8, PeerURLs: []string{"http://m:1"}}, ErrTooManyLearners},
		{ConfChange{Type: ConfChangePromoteMember, ID: 100}, ErrMemberNotLearner},
		{ConfChange{Type: ConfChangePromoteMember, ID: 9}, ErrIDNotFound},
		{ConfChange{Type: ConfChangeUpdateMember, ID: 7, PeerURLs: []string{"http://self:2380"}}, ErrPeerURLExists},
		{ConfChange{Type: ConfChangeUpdateMember, ID: 100, PeerURLs: []string{"http://self:2380"}}, nil}, // its own URLs
		{ConfChange{Type: ConfChangeUpdateMember, ID: 9, PeerURLs: []string{"http://z:1"}}, ErrIDNotFound},
		{ConfChange{Type: ConfChangeUpdateMember, ID: 7, PeerURLs: []string{"http://l2:1"}}, nil},
		{ConfChange{Type: ConfChangePromoteMember, ID: 7}, nil},
		{ConfChange{Type: ConfChangeAddLearner, ID: 8, PeerURLs: []string{"http://m:1"}}, nil},
		{ConfChange{Type: ConfChangeRemoveMember, ID: 8}, nil},
		{ConfChange{Type: ConfChangeRemoveMember, ID: 8}, ErrIDRemoved},
		{ConfChange{Type: ConfChangeAddMember, ID: 8, PeerURLs: []string{"http://n:1"}}, ErrIDRemoved},
		{ConfChange{Type: ConfChangeRemoveMember, ID: 9}, ErrIDNotFound},
		{ConfChange{Type: ConfChangeAddMember, ID: 1, PeerURLs: []string{"http://v:1"}}, nil},
	}
	for i, s := range steps {
		if err := apply(s.cc); !errors.Is(err, s.want) {
			t.Fatalf("step %d %+v: err = %v, want %v", i, s.cc, err, s.want)
		}
	}
	check := func(ms *Membership) {
		t.Helper()
		var got []string
		for _, m := range ms.Members {
			got = append(got, m.String())
		}
		want := []string{
			(&pb.Member{ID: 1, PeerURLs: []string{"http://v:1"}}).String(),
			(&pb.Member{ID: 7, PeerURLs: []string{"http://l2:1"}}).String(),
			(&pb.Member{ID: 100, PeerURLs: []string{"http://self:2380"}}).String(),
		}
		if len(got) != len(want) {
			t.Fatalf("members = %v, want %v", got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("members = %v, want %v", got, want)
			}
		}
		if len(ms.Removed) != 1 || ms.Removed[0] != 8 {
			t.Fatalf("removed = %v, want [8]", ms.Removed)
		}
	}
	check(a.Members())
	st.Close()
	st, a = openMembers(t, dir)
	defer st.Close()
	check(a.Members())
}

// TestConfChangeThroughLoop: a membership change is applied in order with
// requests and counts toward the applied index.
func TestConfChangeThroughLoop(t *testing.T) {
	st, a := openMembers(t, t.TempDir())
	defer st.Close()
	l, err := NewLoop(st, a, LoopOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Stop()
	ctx := context.Background()
	before := l.AppliedIndex()
	res, err := l.ProposeConfChange(ctx, &ConfChange{Type: ConfChangeAddLearner, ID: 5, PeerURLs: []string{"http://x:1"}})
	if err != nil || res.Err != nil {
		t.Fatalf("ProposeConfChange: %v %v", err, res.Err)
	}
	if ms := res.Resp.(*Membership); len(ms.Members) != 2 || !ms.Members[0].IsLearner {
		t.Fatalf("members = %v", ms.Members)
	}
	if got := l.AppliedIndex(); got != before+1 {
		t.Fatalf("applied index %d, want %d", got, before+1)
	}
}

// TestVersionsPersist: the downgrade and the cluster version are applied
// requests and survive a reopen.
func TestVersionsPersist(t *testing.T) {
	dir := t.TempDir()
	st, a := openMembers(t, dir)
	if v := a.Versions(); v.Cluster != "3.6.0" || v.DowngradeEnabled {
		t.Fatalf("initial versions %+v", v)
	}
	b, err := st.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*Request{
		{DowngradeInfoSet: &membershippb.DowngradeInfoSetRequest{Enabled: true, Ver: "3.5.0"}},
		{ClusterVersionSet: &membershippb.ClusterVersionSetRequest{Ver: "3.5.0"}},
	} {
		if res := a.Apply(b, r); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st, a = openMembers(t, dir)
	defer st.Close()
	if v := *a.Versions(); v != (Versions{Cluster: "3.5.0", DowngradeEnabled: true, DowngradeTarget: "3.5.0"}) {
		t.Fatalf("versions after reopen %+v", v)
	}
}
