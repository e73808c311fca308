package wasmhost

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/metastore-dev/metastore/internal/policyabi"
)

// Names of the exports and imports of ABI v1.
const (
	ExportMarker    = "metastore_policy_v1"
	ExportMemory    = "memory"
	ExportInitRT    = "_initialize"
	ExportBuffer    = "policy_buffer"
	ExportInit      = "policy_init"
	ExportAuthorize = "policy_authorize"
	ExportAdmit     = "policy_admit"
	ExportReason    = "policy_reason"
	ExportMutation  = "policy_mutation"

	ImportModule = "metastore"
	ImportLog    = "log"
	// importFuel is the check-in function that metering adds to every module
	// (see internal/wasmbin.AddMetering); a guest may not import it itself.
	importFuel = "__metastore_fuel"
)

// Verdict is a policy's answer.
type Verdict int32

// Verdicts of ABI v1.
const (
	Deny      Verdict = 0
	Allow     Verdict = 1
	NoOpinion Verdict = 2
	Mutated   Verdict = 3 // admission only
)

func (v Verdict) String() string {
	switch v {
	case Deny:
		return "deny"
	case Allow:
		return "allow"
	case NoOpinion:
		return "no_opinion"
	case Mutated:
		return "mutated"
	}
	return fmt.Sprintf("verdict(%d)", int32(v))
}

// Hook is the guest entry point a call goes to.
type Hook uint8

// Hooks.
const (
	HookAuthorize Hook = iota
	HookAdmit
)

func (h Hook) String() string {
	if h == HookAdmit {
		return "admit"
	}
	return "authorize"
}

// Op is the request's operation: the ABI's op byte. Its values, the flags and
// the permissions are internal/policyabi's (one definition for auth, wasmhost
// and the SDK).
type Op = policyabi.Op

// Perm is the permission a key range needs: the ABI's permission byte.
type Perm = policyabi.Perm

// AdmitKind is the type of the etcd protobuf message an admission request
// carries.
type AdmitKind = policyabi.AdmitKind

// Range is one key range a request touches. End keeps etcd's meaning: empty
// for the single key Key, "\x00" for every key >= Key, else [Key, End).
type Range struct {
	Perm Perm
	Key  []byte
	End  []byte
}

// Request is the header every policy call receives.
type Request struct {
	Op       Op
	Flags    uint8
	Revision int64
	User     string
	Roles    []string
	// Tenant is the configured tenant owning the request's keys, with its
	// current usage.
	Tenant      string
	TenantKeys  uint64
	TenantBytes uint64
	Ranges      []Range
}

const abiVersion = 1

var errFieldTooLong = errors.New("wasmhost: request field too long for the policy ABI")

// AppendRequest appends the binary encoding of r (the authorization
// request) to dst.
func AppendRequest(dst []byte, r *Request) ([]byte, error) {
	if len(r.User) > math.MaxUint16 || len(r.Tenant) > math.MaxUint16 ||
		len(r.Roles) > math.MaxUint16 || len(r.Ranges) > math.MaxUint16 {
		return dst, errFieldTooLong
	}
	dst = append(dst, abiVersion, byte(r.Op), r.Flags, 0)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(r.Revision))
	dst = appendStr16(dst, r.User)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(r.Roles)))
	for _, role := range r.Roles {
		if len(role) > math.MaxUint16 {
			return dst, errFieldTooLong
		}
		dst = appendStr16(dst, role)
	}
	dst = appendStr16(dst, r.Tenant)
	dst = binary.LittleEndian.AppendUint64(dst, r.TenantKeys)
	dst = binary.LittleEndian.AppendUint64(dst, r.TenantBytes)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(r.Ranges)))
	for i := range r.Ranges {
		rg := &r.Ranges[i]
		if uint64(len(rg.Key)) > math.MaxUint32 || uint64(len(rg.End)) > math.MaxUint32 {
			return dst, errFieldTooLong
		}
		dst = append(dst, byte(rg.Perm))
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(rg.Key)))
		dst = append(dst, rg.Key...)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(rg.End)))
		dst = append(dst, rg.End...)
	}
	return dst, nil
}

// AppendAdmission appends an admission request: the header of r followed by
// the kind and the request's protobuf bytes.
func AppendAdmission(dst []byte, r *Request, kind AdmitKind, msg []byte) ([]byte, error) {
	dst, err := AppendRequest(dst, r)
	if err != nil {
		return dst, err
	}
	if uint64(len(msg)) > math.MaxUint32 {
		return dst, errFieldTooLong
	}
	dst = append(dst, byte(kind))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(msg)))
	return append(dst, msg...), nil
}

func appendStr16(dst []byte, s string) []byte {
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(s)))
	return append(dst, s...)
}

// Admission is the part of an admission request after the header.
type Admission struct {
	Kind    AdmitKind
	Message []byte
}

// DecodeRequest parses an encoded request; admission is nil for an
// authorization request. Key and message slices alias b.
func DecodeRequest(b []byte) (req Request, admission *Admission, err error) {
	d := decoder{b: b}
	if v := d.u8(); v != abiVersion && d.err == nil {
		return req, nil, fmt.Errorf("wasmhost: request version %d, want %d", v, abiVersion)
	}
	req.Op = Op(d.u8())
	req.Flags = d.u8()
	d.u8()
	req.Revision = int64(d.u64())
	req.User = string(d.bytes(int(d.u16())))
	if n := int(d.u16()); n > 0 {
		req.Roles = make([]string, 0, min(n, len(b)))
		for i := 0; i < n && d.err == nil; i++ {
			req.Roles = append(req.Roles, string(d.bytes(int(d.u16()))))
		}
	}
	req.Tenant = string(d.bytes(int(d.u16())))
	req.TenantKeys = d.u64()
	req.TenantBytes = d.u64()
	if n := int(d.u16()); n > 0 {
		req.Ranges = make([]Range, 0, min(n, len(b)))
		for i := 0; i < n && d.err == nil; i++ {
			var rg Range
			rg.Perm = Perm(d.u8())
			rg.Key = d.bytes(int(d.u32()))
			rg.End = d.bytes(int(d.u32()))
			req.Ranges = append(req.Ranges, rg)
		}
	}
	if d.err == nil && d.off < len(b) {
		admission = &Admission{Kind: AdmitKind(d.u8())}
		admission.Message = d.bytes(int(d.u32()))
		if d.err == nil && d.off != len(b) {
			d.err = fmt.Errorf("wasmhost: %d trailing bytes in request", len(b)-d.off)
		}
	}
	if d.err != nil {
		return Request{}, nil, d.err
	}
	return req, admission, nil
}

type decoder struct {
	b   []byte
	off int
	err error
}

var errShortRequest = errors.New("wasmhost: request truncated")

func (d *decoder) need(n int) bool {
	if d.err != nil {
		return false
	}
	if n < 0 || len(d.b)-d.off < n {
		d.err = errShortRequest
		return false
	}
	return true
}

func (d *decoder) u8() uint8 {
	if !d.need(1) {
		return 0
	}
	d.off++
	return d.b[d.off-1]
}

func (d *decoder) u16() uint16 {
	if !d.need(2) {
		return 0
	}
	d.off += 2
	return binary.LittleEndian.Uint16(d.b[d.off-2:])
}

func (d *decoder) u32() uint32 {
	if !d.need(4) {
		return 0
	}
	d.off += 4
	return binary.LittleEndian.Uint32(d.b[d.off-4:])
}

func (d *decoder) u64() uint64 {
	if !d.need(8) {
		return 0
	}
	d.off += 8
	return binary.LittleEndian.Uint64(d.b[d.off-8:])
}

func (d *decoder) bytes(n int) []byte {
	if !d.need(n) {
		return nil
	}
	d.off += n
	return d.b[d.off-n : d.off : d.off]
}
