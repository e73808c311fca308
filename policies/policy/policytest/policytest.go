// Package policytest runs a policy's handlers natively, so a policy author
// tests with plain `go test`: build a Request, encode it exactly as the
// host does, and call Authorize or Admit, which go through the SDK's own
// decoding.
package policytest

import (
	"encoding/binary"

	"github.com/metastore-dev/metastore/policies/policy"
)

// Request describes a request in plain fields.
type Request struct {
	Op          policy.Op
	Flags       uint8
	Revision    int64
	User        string
	Roles       []string
	Tenant      string
	TenantKeys  uint64
	TenantBytes uint64
	Ranges      []policy.Range
}

// Encode returns the ABI v1 encoding of the request header.
func (r Request) Encode() []byte {
	b := []byte{1, byte(r.Op), r.Flags, 0}
	b = binary.LittleEndian.AppendUint64(b, uint64(r.Revision))
	b = str16(b, r.User)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(r.Roles)))
	for _, role := range r.Roles {
		b = str16(b, role)
	}
	b = str16(b, r.Tenant)
	b = binary.LittleEndian.AppendUint64(b, r.TenantKeys)
	b = binary.LittleEndian.AppendUint64(b, r.TenantBytes)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(r.Ranges)))
	for _, rg := range r.Ranges {
		b = append(b, byte(rg.Perm))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(rg.Key)))
		b = append(b, rg.Key...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(rg.End)))
		b = append(b, rg.End...)
	}
	return b
}

// EncodeAdmission returns the encoding of an admission request.
func (r Request) EncodeAdmission(kind policy.AdmitKind, msg []byte) []byte {
	b := append(r.Encode(), byte(kind))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(msg)))
	return append(b, msg...)
}

func str16(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// Init runs the policy's init handler with settings.
func Init(settings string) error { return policy.RunInit([]byte(settings)) }

// Authorize runs the policy's authorize handler on r.
func Authorize(r Request) (policy.Verdict, string) { return policy.RunAuthorize(r.Encode()) }

// Admit runs the policy's admit handler on r carrying msg.
func Admit(r Request, kind policy.AdmitKind, msg []byte) (policy.Verdict, string, []byte) {
	return policy.RunAdmit(r.EncodeAdmission(kind, msg))
}

// Key is a single-key range.
func Key(perm policy.Perm, key string) policy.Range {
	return policy.Range{Perm: perm, Key: []byte(key)}
}

// Prefix is the range of every key with prefix, as etcd clients send it.
func Prefix(perm policy.Perm, prefix string) policy.Range {
	return policy.Range{Perm: perm, Key: []byte(prefix), End: policy.PrefixEnd([]byte(prefix))}
}

// Put builds the request and message for a put of key=value by user, as
// the server would: one write range and the PutRequest bytes.
func Put(user, key, value string) (Request, []byte) {
	p := policy.PutRequest{Key: []byte(key), Value: []byte(value)}
	return Request{Op: policy.OpPut, User: user, Ranges: []policy.Range{Key(policy.PermWrite, key)}}, p.Marshal(nil)
}
