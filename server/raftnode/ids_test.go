package raftnode

import (
	"testing"
	"time"
)

// The expected IDs were printed by etcd v3.6.16's own membership code
// (membership.NewClusterFromURLsMap over types.NewURLsMap, run from the
// tests module); the first pair is also what a default `etcd` logs.
func TestMemberAndClusterIDsMatchEtcd(t *testing.T) {
	for _, tc := range []struct {
		token   string
		members [][]string
		ids     []uint64
		cluster uint64
	}{
		{
			token:   "etcd-cluster",
			members: [][]string{{"http://localhost:2380"}},
			ids:     []uint64{0x8e9e05c52164694d},
			cluster: 0xcdf818194e3a8c32,
		},
		{
			token: "etcd-cluster-1",
			members: [][]string{
				{"http://127.0.0.1:12380"}, {"http://127.0.0.1:22380"}, {"http://127.0.0.1:32380"},
			},
			ids:     []uint64{0x8211f1d0f64f3269, 0x91bc3c398fb3c146, 0xfd422379fda50e48},
			cluster: 0xef37ad9dc622a7c4,
		},
		{
			// Several URLs per member: sorted before hashing.
			token:   "tok",
			members: [][]string{{"https://10.0.0.1:2380", "http://10.0.0.1:2381"}, {"http://10.0.0.2:2380"}},
			ids:     []uint64{0x931a3694c6074418, 0x61b046c1789d11d8},
			cluster: 0xe618278f0508beea,
		},
	} {
		var ids []uint64
		for i, urls := range tc.members {
			id, err := MemberID(urls, tc.token, nil)
			if err != nil {
				t.Fatal(err)
			}
			if id != tc.ids[i] {
				t.Errorf("MemberID(%v, %q) = %s, etcd says %s", urls, tc.token, FormatID(id), FormatID(tc.ids[i]))
			}
			ids = append(ids, id)
		}
		// Order of the member list must not matter.
		ids[0], ids[len(ids)-1] = ids[len(ids)-1], ids[0]
		if got := ClusterID(ids); got != tc.cluster {
			t.Errorf("ClusterID(%v) = %s, etcd says %s", ids, FormatID(got), FormatID(tc.cluster))
		}
	}
}

func TestMemberIDWithTimeDiffers(t *testing.T) {
	urls := []string{"http://127.0.0.1:2380"}
	boot, _ := MemberID(urls, "tok", nil)
	now := time.Unix(1700000000, 0)
	added, _ := MemberID(urls, "tok", &now)
	if boot == added {
		t.Fatal("a member added at run time got the bootstrap ID")
	}
	again, _ := MemberID(urls, "tok", &now)
	if again != added {
		t.Fatal("MemberID is not deterministic")
	}
	for _, bad := range [][]string{nil, {"127.0.0.1:2380"}, {"http://%zz"}, {"ftp://h:1"}, {"http://h"}, {"http://h:1/p"}} {
		if _, err := MemberID(bad, "tok", nil); err == nil {
			t.Errorf("MemberID(%q) accepted", bad)
		}
	}
}

func TestRequestIDsUnique(t *testing.T) {
	g := newRequestIDs(0x8e9e05c52164694d, time.Now())
	seen := map[uint64]bool{}
	for range 100000 {
		id := g.next()
		if seen[id] || id == 0 {
			t.Fatalf("duplicate or zero id %x", id)
		}
		seen[id] = true
	}
	if top := g.next() >> 48; top != 0x694d {
		t.Fatalf("id prefix %x, want the member's low 16 bits", top)
	}
}
