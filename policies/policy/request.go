package policy

import (
	"bytes"
	"encoding/binary"
	"errors"

	"github.com/metastore-dev/metastore/internal/policyabi"
)

// Op is the request's operation: the ABI's op byte (internal/policyabi).
type Op = policyabi.Op

// Operations of ABI v1.
const (
	OpRange       = policyabi.OpRange
	OpPut         = policyabi.OpPut
	OpDeleteRange = policyabi.OpDeleteRange
	OpTxn         = policyabi.OpTxn
	OpWatch       = policyabi.OpWatch
	OpLeaseRevoke = policyabi.OpLeaseRevoke
	OpCompact     = policyabi.OpCompact
	// OpAdmin is every request that needs the root role (auth management,
	// maintenance); it carries no key ranges.
	OpAdmin = policyabi.OpAdmin
)

// Request flags (the ABI's flags byte).
const (
	FlagSerializable = policyabi.FlagSerializable
	FlagKeysOnly     = policyabi.FlagKeysOnly
	FlagCountOnly    = policyabi.FlagCountOnly
	FlagPrevKV       = policyabi.FlagPrevKV
)

// Perm is the permission a key range needs: the ABI's permission byte.
type Perm = policyabi.Perm

// Permissions.
const (
	PermRead  = policyabi.PermRead
	PermWrite = policyabi.PermWrite
)

// Request is a zero-copy view of an encoded request: every []byte it
// returns points into the host's buffer and is valid only until the handler
// returns.
type Request struct {
	buf      []byte
	op       Op
	flags    uint8
	revision int64
	user     []byte
	roles    [][]byte
	tenant   []byte
	tKeys    uint64
	tBytes   uint64
	ranges   []Range
	rest     []byte // admission part
}

// Op is the operation.
func (r *Request) Op() Op { return r.op }

// Flags are the request's FlagX bits.
func (r *Request) Flags() uint8 { return r.flags }

// Revision is the revision a read asks for (0 = latest).
func (r *Request) Revision() int64 { return r.revision }

// User is the authenticated user name (empty when auth is off).
func (r *Request) User() []byte { return r.user }

// Roles are the user's roles.
func (r *Request) Roles() [][]byte { return r.roles }

// HasRole reports whether the user has role.
func (r *Request) HasRole(role string) bool {
	for _, x := range r.roles {
		if string(x) == role {
			return true
		}
	}
	return false
}

// Tenant is the configured tenant owning the request's keys (empty if none).
func (r *Request) Tenant() []byte { return r.tenant }

// TenantUsage is the tenant's current number of keys and bytes.
func (r *Request) TenantUsage() (keys, bytes uint64) { return r.tKeys, r.tBytes }

// Ranges are every key range the request touches: for a Txn, those of its
// compares and of both branches.
func (r *Request) Ranges() []Range { return r.ranges }

// Raw is the encoded request.
func (r *Request) Raw() []byte { return r.buf }

// ErrMalformed is returned for a request that does not decode.
var ErrMalformed = errors.New("policy: malformed request")

// parse fills r from b, reusing r's slices.
func (r *Request) parse(b []byte) error {
	r.buf = b
	if len(b) < 12 || b[0] != 1 {
		return ErrMalformed
	}
	r.op, r.flags = Op(b[1]), b[2]
	r.revision = int64(binary.LittleEndian.Uint64(b[4:]))
	off := 12
	var ok bool
	if r.user, off, ok = str16(b, off); !ok {
		return ErrMalformed
	}
	if off+2 > len(b) {
		return ErrMalformed
	}
	n := int(binary.LittleEndian.Uint16(b[off:]))
	off += 2
	r.roles = r.roles[:0]
	for i := 0; i < n; i++ {
		var role []byte
		if role, off, ok = str16(b, off); !ok {
			return ErrMalformed
		}
		r.roles = append(r.roles, role)
	}
	if r.tenant, off, ok = str16(b, off); !ok {
		return ErrMalformed
	}
	if off+18 > len(b) {
		return ErrMalformed
	}
	r.tKeys = binary.LittleEndian.Uint64(b[off:])
	r.tBytes = binary.LittleEndian.Uint64(b[off+8:])
	n = int(binary.LittleEndian.Uint16(b[off+16:]))
	off += 18
	r.ranges = r.ranges[:0]
	for i := 0; i < n; i++ {
		if off >= len(b) {
			return ErrMalformed
		}
		rg := Range{Perm: Perm(b[off])}
		if rg.Key, off, ok = bytes32(b, off+1); !ok {
			return ErrMalformed
		}
		if rg.End, off, ok = bytes32(b, off); !ok {
			return ErrMalformed
		}
		r.ranges = append(r.ranges, rg)
	}
	r.rest = b[off:]
	return nil
}

func str16(b []byte, off int) ([]byte, int, bool) {
	if off+2 > len(b) {
		return nil, off, false
	}
	n := int(binary.LittleEndian.Uint16(b[off:]))
	off += 2
	if off+n > len(b) {
		return nil, off, false
	}
	return b[off : off+n : off+n], off + n, true
}

func bytes32(b []byte, off int) ([]byte, int, bool) {
	if off+4 > len(b) {
		return nil, off, false
	}
	n := int(binary.LittleEndian.Uint32(b[off:]))
	off += 4
	if n < 0 || n > len(b)-off {
		return nil, off, false
	}
	return b[off : off+n : off+n], off + n, true
}

// AdmitKind is the type of the etcd protobuf message an admission request
// carries.
type AdmitKind = policyabi.AdmitKind

// Admission kinds.
const (
	AdmitPut         = policyabi.AdmitPut         // etcdserverpb.PutRequest
	AdmitDeleteRange = policyabi.AdmitDeleteRange // etcdserverpb.DeleteRangeRequest
	AdmitTxn         = policyabi.AdmitTxn         // etcdserverpb.TxnRequest
)

// Admission is the write being admitted: its kind and its etcd protobuf
// bytes (a view, like Request's).
type Admission struct {
	Kind    AdmitKind
	Message []byte
}

func (r *Request) admission() (Admission, error) {
	b := r.rest
	if len(b) < 5 {
		return Admission{}, ErrMalformed
	}
	a := Admission{Kind: AdmitKind(b[0])}
	var ok bool
	if a.Message, _, ok = bytes32(b, 1); !ok {
		return Admission{}, ErrMalformed
	}
	return a, nil
}

// Put decodes the message of an AdmitPut.
func (a Admission) Put() (PutRequest, error) {
	if a.Kind != AdmitPut {
		return PutRequest{}, errors.New("policy: admission is not a put")
	}
	return DecodePutRequest(a.Message)
}

// DeleteRange decodes the message of an AdmitDeleteRange.
func (a Admission) DeleteRange() (DeleteRangeRequest, error) {
	if a.Kind != AdmitDeleteRange {
		return DeleteRangeRequest{}, errors.New("policy: admission is not a delete")
	}
	return DecodeDeleteRangeRequest(a.Message)
}

// Txn decodes the message of an AdmitTxn.
func (a Admission) Txn() (TxnRequest, error) {
	if a.Kind != AdmitTxn {
		return TxnRequest{}, errors.New("policy: admission is not a txn")
	}
	return DecodeTxnRequest(a.Message)
}

// Range is a key range with etcd's conventions: End empty is the single key
// Key; End "\x00" is every key >= Key; otherwise the half-open [Key, End).
type Range struct {
	Perm Perm
	Key  []byte
	End  []byte
}

// IsSingleKey reports whether the range is one key.
func (r Range) IsSingleKey() bool { return len(r.End) == 0 }

// IsFromKey reports whether the range is every key >= Key.
func (r Range) IsFromKey() bool { return len(r.End) == 1 && r.End[0] == 0 }

// Contains reports whether key is in the range.
func (r Range) Contains(key []byte) bool {
	switch {
	case r.IsSingleKey():
		return bytes.Equal(key, r.Key)
	case r.IsFromKey():
		return bytes.Compare(key, r.Key) >= 0
	}
	return bytes.Compare(key, r.Key) >= 0 && bytes.Compare(key, r.End) < 0
}

// PrefixEnd returns the range end that covers every key with prefix, as
// etcd's clientv3.GetPrefixRangeEnd: the prefix with its last byte below
// 0xff incremented and the bytes after it dropped, or "\x00" (every key
// from the prefix on) when there is no such byte.
func PrefixEnd(prefix []byte) []byte {
	for i := len(prefix) - 1; i >= 0; i-- {
		if prefix[i] < 0xff {
			end := make([]byte, i+1)
			copy(end, prefix)
			end[i]++
			return end
		}
	}
	return []byte{0}
}

// prefixEndCmp compares end (a range end that is not "\x00") with the end
// of prefix without allocating: the prefix end is the smallest key greater
// than every key starting with prefix.
func beforeOrAtPrefixEnd(end, prefix []byte) bool {
	// end <= PrefixEnd(prefix) ⇔ no key >= end starts with prefix and is
	// < end, i.e. end <= prefix, or end starts with prefix, or end is
	// exactly the prefix end, or end < prefix end generally.
	i := len(prefix) - 1
	for i >= 0 && prefix[i] == 0xff {
		i--
	}
	if i < 0 {
		return true // prefix end is infinity
	}
	// PrefixEnd = prefix[:i] + (prefix[i]+1)
	n := min(len(end), i)
	if c := bytes.Compare(end[:n], prefix[:n]); c != 0 {
		return c < 0
	}
	if len(end) <= i {
		return true // end is a proper prefix of prefix[:i]… so end < prefix end
	}
	if end[i] != prefix[i]+1 {
		return end[i] < prefix[i]+1
	}
	return len(end) == i+1
}

// Within reports whether every key of the range starts with prefix. An
// empty range (End <= Key) is within anything.
func (r Range) Within(prefix []byte) bool {
	switch {
	case r.IsSingleKey():
		return bytes.HasPrefix(r.Key, prefix)
	case r.IsFromKey():
		// Unbounded: only a prefix without an end (empty or all 0xff) holds it.
		return bytes.Compare(r.Key, prefix) >= 0 && bytes.Equal(PrefixEnd(prefix), []byte{0}) && bytes.HasPrefix(r.Key, prefix)
	case bytes.Compare(r.End, r.Key) <= 0:
		return true
	}
	return bytes.Compare(r.Key, prefix) >= 0 && beforeOrAtPrefixEnd(r.End, prefix)
}

// Overlaps reports whether some key of the range starts with prefix.
func (r Range) Overlaps(prefix []byte) bool {
	switch {
	case r.IsSingleKey():
		return bytes.HasPrefix(r.Key, prefix)
	case !r.IsFromKey() && bytes.Compare(r.End, r.Key) <= 0:
		return false
	}
	// [Key, End) meets [prefix, prefixEnd) iff Key < prefixEnd and prefix < End.
	if !r.IsFromKey() && bytes.Compare(prefix, r.End) >= 0 {
		return false
	}
	if bytes.HasPrefix(r.Key, prefix) || bytes.Compare(r.Key, prefix) < 0 {
		return true
	}
	// Key > prefix and not within it: it is past every key with prefix.
	return false
}
