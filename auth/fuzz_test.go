package auth

import (
	"bytes"
	"testing"

	"go.etcd.io/etcd/api/v3/authpb"

	"github.com/metastore-dev/metastore/internal/policyabi"
)

// FuzzDecodeUser: a persisted user record never panics the loader, and a
// record it accepts encodes back to an equivalent user.
func FuzzDecodeUser(f *testing.F) {
	for _, u := range []*user{
		{name: "root", password: []byte("$2a$04$x"), roles: []string{"root"}, credRev: 3},
		{name: "nopw", noPassword: true, credRev: 1 << 40},
	} {
		raw, _ := encodeUser(u)
		f.Add(raw)
	}
	f.Add([]byte{userRecordVersion, 0x80})
	f.Fuzz(func(t *testing.T, raw []byte) {
		u, err := decodeUser(raw)
		if err != nil {
			return
		}
		again, err := encodeUser(u)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		u2, err := decodeUser(again)
		if err != nil || u2.name != u.name || u2.credRev != u.credRev || !bytes.Equal(u2.password, u.password) || u2.noPassword != u.noPassword {
			t.Fatalf("round trip changed the user: %+v -> %+v (%v)", u, u2, err)
		}
	})
}

// FuzzPermCheck: for any permission set and request, the check agrees with
// etcd's model on well-formed ranges and never panics.
func FuzzPermCheck(f *testing.F) {
	f.Add([]byte("a"), []byte("c"), uint8(2), []byte("b"), []byte(""), []byte("x"), []byte{0})
	f.Add([]byte("k"), []byte{}, uint8(0), []byte("k"), []byte("k\x00"), []byte("z"), []byte("a"))
	f.Fuzz(func(t *testing.T, k1, e1 []byte, typ uint8, qk, qe, k2, e2 []byte) {
		var perms []*authpb.Permission
		for _, p := range []*authpb.Permission{
			{PermType: authpb.Permission_Type(typ % 3), Key: k1, RangeEnd: e1},
			{PermType: authpb.Permission_Type((typ / 3) % 3), Key: k2, RangeEnd: e2},
		} {
			if validPermissionRange(p.Key, p.RangeEnd) {
				perms = append(perms, p)
			}
		}
		ps := newPermSet([]*role{{perms: perms}})
		for _, want := range []Perm{policyabi.PermRead, policyabi.PermWrite} {
			got := ps.allows(want, qk, qe)
			inverted := len(qe) > 0 && !isOpenEnded(qe) && bytes.Compare(qe, qk) < 0
			if !inverted && got != modelAllows(perms, want, qk, qe) {
				t.Fatalf("perms %s: allows(%d, %q, %q) = %v, etcd's model disagrees", fmtPerms(perms), want, qk, qe, got)
			}
		}
	})
}
