package wasmhost

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"github.com/metastore-dev/metastore/internal/policyabi"
)

func TestRequestRoundTrip(t *testing.T) {
	r := Request{Op: policyabi.OpTxn, Flags: policyabi.FlagKeysOnly, Revision: 42, User: "u", Roles: []string{"a", "b"},
		Tenant: "t", TenantKeys: 1, TenantBytes: 2,
		Ranges: []Range{{Perm: policyabi.PermRead, Key: []byte("k"), End: []byte{0}}, {Perm: policyabi.PermWrite, Key: []byte("x"), End: []byte{}}}}
	b, err := AppendAdmission(nil, &r, policyabi.AdmitTxn, []byte("m"))
	if err != nil {
		t.Fatal(err)
	}
	got, adm, err := DecodeRequest(b)
	if err != nil {
		t.Fatal(err)
	}
	if adm == nil || adm.Kind != policyabi.AdmitTxn || string(adm.Message) != "m" {
		t.Fatalf("admission %+v", adm)
	}
	if got.Ranges[1].End == nil {
		got.Ranges[1].End = []byte{}
	}
	if !reflect.DeepEqual(got, r) {
		t.Fatalf("got %+v\nwant %+v", got, r)
	}
	// The layout of policy-abi.md, byte by byte, for a small request.
	small, _ := AppendRequest(nil, &Request{Op: policyabi.OpPut, User: "al", Ranges: []Range{{Perm: policyabi.PermWrite, Key: []byte("k")}}})
	want := []byte{1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 'a', 'l', 0, 0, 0, 0,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2, 1, 0, 0, 0, 'k', 0, 0, 0, 0}
	if !bytes.Equal(small, want) {
		t.Fatalf("layout\n got %v\nwant %v", small, want)
	}
	if _, err := AppendRequest(nil, &Request{User: strings.Repeat("x", 1<<16)}); err == nil {
		t.Fatal("over-long user accepted")
	}
}

func FuzzDecodeRequest(f *testing.F) {
	b, _ := AppendAdmission(nil, &Request{Op: policyabi.OpPut, User: "u", Roles: []string{"r"}, Ranges: []Range{{Perm: policyabi.PermWrite, Key: []byte("k")}}}, policyabi.AdmitPut, []byte("x"))
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, adm, err := DecodeRequest(b)
		if err != nil {
			return
		}
		var enc []byte
		if adm != nil {
			enc, err = AppendAdmission(nil, &r, adm.Kind, adm.Message)
		} else {
			enc, err = AppendRequest(nil, &r)
		}
		if err != nil {
			t.Fatal(err)
		}
		// Decoding ignores only the reserved byte.
		if len(enc) != len(b) || !bytes.Equal(enc[4:], b[4:]) || !bytes.Equal(enc[:3], b[:3]) {
			t.Fatalf("re-encoding differs:\n%x\n%x", enc, b)
		}
	})
}
