package policy

import (
	"errors"
	"math"
)

// The admission protobufs, decoded by hand: etcd's generated gogo types
// would pull gogo/protobuf and grpc into the guest (several MB of wasm and
// a slower init) for four small messages. Decoded byte fields are views of
// the input; Marshal writes the fields etcd knows in field order, so a
// mutation round-trips through etcd's own unmarshaller. Unknown fields are
// skipped and not written back.

var errProto = errors.New("policy: malformed protobuf")

type protoReader struct {
	b   []byte
	off int
	err error
}

func (r *protoReader) more() bool { return r.err == nil && r.off < len(r.b) }

func (r *protoReader) varint() uint64 {
	var v uint64
	for shift := uint(0); shift < 64; shift += 7 {
		if r.off >= len(r.b) {
			r.err = errProto
			return 0
		}
		c := r.b[r.off]
		r.off++
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return v
		}
	}
	r.err = errProto
	return 0
}

func (r *protoReader) bytes() []byte {
	n := r.varint()
	if r.err != nil || n > uint64(len(r.b)-r.off) {
		r.err = errProto
		return nil
	}
	s := r.b[r.off : r.off+int(n) : r.off+int(n)]
	r.off += int(n)
	return s
}

// field returns the next field number and wire type.
func (r *protoReader) field() (int, int) {
	k := r.varint()
	if k>>3 > math.MaxInt32 || k>>3 == 0 {
		r.err = errProto
	}
	return int(k >> 3), int(k & 7)
}

func (r *protoReader) skip(wire int) {
	switch wire {
	case 0:
		r.varint()
	case 1:
		r.off += 8
	case 2:
		r.bytes()
	case 5:
		r.off += 4
	default:
		r.err = errProto
	}
	if r.off > len(r.b) {
		r.err = errProto
	}
}

// expect checks a field's wire type.
func (r *protoReader) expect(wire, want int) bool {
	if wire != want {
		r.err = errProto
		return false
	}
	return true
}

func appendVarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func appendBytesField(b []byte, field int, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	return appendBytesAlways(b, field, v)
}

func appendBytesAlways(b []byte, field int, v []byte) []byte {
	b = appendVarint(b, uint64(field)<<3|2)
	b = appendVarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendIntField(b []byte, field int, v int64) []byte {
	if v == 0 {
		return b
	}
	return appendIntAlways(b, field, v)
}

func appendIntAlways(b []byte, field int, v int64) []byte {
	b = appendVarint(b, uint64(field)<<3)
	return appendVarint(b, uint64(v))
}

func appendBoolField(b []byte, field int, v bool) []byte {
	if !v {
		return b
	}
	return appendIntAlways(b, field, 1)
}

// appendMessage appends field as a length-delimited sub-message produced by
// enc (written in place, then its length inserted).
func appendMessage(b []byte, field int, enc func([]byte) []byte) []byte {
	b = appendVarint(b, uint64(field)<<3|2)
	start := len(b)
	b = enc(b)
	n := len(b) - start
	var lenBuf [10]byte
	l := appendVarint(lenBuf[:0], uint64(n))
	b = append(b, l...)
	copy(b[start+len(l):], b[start:start+n])
	copy(b[start:], l)
	return b
}

// PutRequest is etcdserverpb.PutRequest.
type PutRequest struct {
	Key         []byte
	Value       []byte
	Lease       int64
	PrevKV      bool
	IgnoreValue bool
	IgnoreLease bool
}

// DecodePutRequest decodes a PutRequest; Key and Value alias b.
func DecodePutRequest(b []byte) (PutRequest, error) {
	var p PutRequest
	r := &protoReader{b: b}
	for r.more() {
		f, w := r.field()
		switch {
		case f == 1 && r.expect(w, 2):
			p.Key = r.bytes()
		case f == 2 && r.expect(w, 2):
			p.Value = r.bytes()
		case f == 3 && r.expect(w, 0):
			p.Lease = int64(r.varint())
		case f == 4 && r.expect(w, 0):
			p.PrevKV = r.varint() != 0
		case f == 5 && r.expect(w, 0):
			p.IgnoreValue = r.varint() != 0
		case f == 6 && r.expect(w, 0):
			p.IgnoreLease = r.varint() != 0
		case f > 6:
			r.skip(w)
		}
	}
	return p, r.err
}

// Marshal appends the protobuf encoding to b.
func (p *PutRequest) Marshal(b []byte) []byte {
	b = appendBytesField(b, 1, p.Key)
	b = appendBytesField(b, 2, p.Value)
	b = appendIntField(b, 3, p.Lease)
	b = appendBoolField(b, 4, p.PrevKV)
	b = appendBoolField(b, 5, p.IgnoreValue)
	return appendBoolField(b, 6, p.IgnoreLease)
}

// DeleteRangeRequest is etcdserverpb.DeleteRangeRequest.
type DeleteRangeRequest struct {
	Key      []byte
	RangeEnd []byte
	PrevKV   bool
}

// DecodeDeleteRangeRequest decodes a DeleteRangeRequest.
func DecodeDeleteRangeRequest(b []byte) (DeleteRangeRequest, error) {
	var d DeleteRangeRequest
	r := &protoReader{b: b}
	for r.more() {
		f, w := r.field()
		switch {
		case f == 1 && r.expect(w, 2):
			d.Key = r.bytes()
		case f == 2 && r.expect(w, 2):
			d.RangeEnd = r.bytes()
		case f == 3 && r.expect(w, 0):
			d.PrevKV = r.varint() != 0
		case f > 3:
			r.skip(w)
		}
	}
	return d, r.err
}

// Marshal appends the protobuf encoding to b.
func (d *DeleteRangeRequest) Marshal(b []byte) []byte {
	b = appendBytesField(b, 1, d.Key)
	b = appendBytesField(b, 2, d.RangeEnd)
	return appendBoolField(b, 3, d.PrevKV)
}

// RangeRequest is etcdserverpb.RangeRequest.
type RangeRequest struct {
	Key               []byte
	RangeEnd          []byte
	Limit             int64
	Revision          int64
	SortOrder         int32
	SortTarget        int32
	Serializable      bool
	KeysOnly          bool
	CountOnly         bool
	MinModRevision    int64
	MaxModRevision    int64
	MinCreateRevision int64
	MaxCreateRevision int64
}

// DecodeRangeRequest decodes a RangeRequest.
func DecodeRangeRequest(b []byte) (RangeRequest, error) {
	var q RangeRequest
	r := &protoReader{b: b}
	for r.more() {
		f, w := r.field()
		if f == 1 || f == 2 {
			if r.expect(w, 2) {
				if f == 1 {
					q.Key = r.bytes()
				} else {
					q.RangeEnd = r.bytes()
				}
			}
			continue
		}
		if f > 13 {
			r.skip(w)
			continue
		}
		if !r.expect(w, 0) {
			break
		}
		v := r.varint()
		switch f {
		case 3:
			q.Limit = int64(v)
		case 4:
			q.Revision = int64(v)
		case 5:
			q.SortOrder = int32(v)
		case 6:
			q.SortTarget = int32(v)
		case 7:
			q.Serializable = v != 0
		case 8:
			q.KeysOnly = v != 0
		case 9:
			q.CountOnly = v != 0
		case 10:
			q.MinModRevision = int64(v)
		case 11:
			q.MaxModRevision = int64(v)
		case 12:
			q.MinCreateRevision = int64(v)
		case 13:
			q.MaxCreateRevision = int64(v)
		}
	}
	return q, r.err
}

// Marshal appends the protobuf encoding to b.
func (q *RangeRequest) Marshal(b []byte) []byte {
	b = appendBytesField(b, 1, q.Key)
	b = appendBytesField(b, 2, q.RangeEnd)
	b = appendIntField(b, 3, q.Limit)
	b = appendIntField(b, 4, q.Revision)
	b = appendIntField(b, 5, int64(q.SortOrder))
	b = appendIntField(b, 6, int64(q.SortTarget))
	b = appendBoolField(b, 7, q.Serializable)
	b = appendBoolField(b, 8, q.KeysOnly)
	b = appendBoolField(b, 9, q.CountOnly)
	b = appendIntField(b, 10, q.MinModRevision)
	b = appendIntField(b, 11, q.MaxModRevision)
	b = appendIntField(b, 12, q.MinCreateRevision)
	return appendIntField(b, 13, q.MaxCreateRevision)
}

// Compare targets and results (etcdserverpb.Compare).
const (
	CompareEqual    int32 = 0
	CompareGreater  int32 = 1
	CompareLess     int32 = 2
	CompareNotEqual int32 = 3

	TargetVersion int32 = 0
	TargetCreate  int32 = 1
	TargetMod     int32 = 2
	TargetValue   int32 = 3
	TargetLease   int32 = 4
)

// Compare is etcdserverpb.Compare. Union is the field number of the
// target_union member that is set (4 version, 5 create_revision, 6
// mod_revision, 7 value, 8 lease; 0 none), Number the integer member's value.
type Compare struct {
	Result   int32
	Target   int32
	Key      []byte
	Union    int
	Number   int64
	Value    []byte
	RangeEnd []byte
}

func decodeCompare(b []byte) (Compare, error) {
	var c Compare
	r := &protoReader{b: b}
	for r.more() {
		f, w := r.field()
		switch {
		case f == 1 && r.expect(w, 0):
			c.Result = int32(r.varint())
		case f == 2 && r.expect(w, 0):
			c.Target = int32(r.varint())
		case f == 3 && r.expect(w, 2):
			c.Key = r.bytes()
		case (f == 4 || f == 5 || f == 6 || f == 8) && r.expect(w, 0):
			c.Union, c.Number, c.Value = f, int64(r.varint()), nil
		case f == 7 && r.expect(w, 2):
			c.Union, c.Number, c.Value = f, 0, r.bytes()
		case f == 64 && r.expect(w, 2):
			c.RangeEnd = r.bytes()
		default:
			r.skip(w)
		}
	}
	return c, r.err
}

func (c *Compare) marshal(b []byte) []byte {
	b = appendIntField(b, 1, int64(c.Result))
	b = appendIntField(b, 2, int64(c.Target))
	b = appendBytesField(b, 3, c.Key)
	switch c.Union {
	case 4, 5, 6, 8:
		b = appendIntAlways(b, c.Union, c.Number)
	case 7:
		b = appendBytesAlways(b, 7, c.Value)
	}
	return appendBytesField(b, 64, c.RangeEnd)
}

// RequestOp is etcdserverpb.RequestOp: exactly one member is set.
type RequestOp struct {
	Range       *RangeRequest
	Put         *PutRequest
	DeleteRange *DeleteRangeRequest
	Txn         *TxnRequest
}

func decodeRequestOp(b []byte) (RequestOp, error) {
	var op RequestOp
	r := &protoReader{b: b}
	for r.more() {
		f, w := r.field()
		if f < 1 || f > 4 {
			r.skip(w)
			continue
		}
		if !r.expect(w, 2) {
			break
		}
		m := r.bytes()
		if r.err != nil {
			break
		}
		op = RequestOp{}
		var err error
		switch f {
		case 1:
			var q RangeRequest
			q, err = DecodeRangeRequest(m)
			op.Range = &q
		case 2:
			var p PutRequest
			p, err = DecodePutRequest(m)
			op.Put = &p
		case 3:
			var d DeleteRangeRequest
			d, err = DecodeDeleteRangeRequest(m)
			op.DeleteRange = &d
		case 4:
			var t TxnRequest
			t, err = DecodeTxnRequest(m)
			op.Txn = &t
		}
		if err != nil {
			return op, err
		}
	}
	return op, r.err
}

func (op *RequestOp) marshal(b []byte) []byte {
	switch {
	case op.Range != nil:
		return appendMessage(b, 1, op.Range.Marshal)
	case op.Put != nil:
		return appendMessage(b, 2, op.Put.Marshal)
	case op.DeleteRange != nil:
		return appendMessage(b, 3, op.DeleteRange.Marshal)
	case op.Txn != nil:
		return appendMessage(b, 4, op.Txn.Marshal)
	}
	return b
}

// TxnRequest is etcdserverpb.TxnRequest.
type TxnRequest struct {
	Compare []Compare
	Success []RequestOp
	Failure []RequestOp
}

// DecodeTxnRequest decodes a TxnRequest, nested txns included.
func DecodeTxnRequest(b []byte) (TxnRequest, error) {
	var t TxnRequest
	r := &protoReader{b: b}
	for r.more() {
		f, w := r.field()
		if f < 1 || f > 3 {
			r.skip(w)
			continue
		}
		if !r.expect(w, 2) {
			break
		}
		m := r.bytes()
		if r.err != nil {
			break
		}
		switch f {
		case 1:
			c, err := decodeCompare(m)
			if err != nil {
				return t, err
			}
			t.Compare = append(t.Compare, c)
		case 2, 3:
			op, err := decodeRequestOp(m)
			if err != nil {
				return t, err
			}
			if f == 2 {
				t.Success = append(t.Success, op)
			} else {
				t.Failure = append(t.Failure, op)
			}
		}
	}
	return t, r.err
}

// Marshal appends the protobuf encoding to b.
func (t *TxnRequest) Marshal(b []byte) []byte {
	for i := range t.Compare {
		b = appendMessage(b, 1, t.Compare[i].marshal)
	}
	for i := range t.Success {
		b = appendMessage(b, 2, t.Success[i].marshal)
	}
	for i := range t.Failure {
		b = appendMessage(b, 3, t.Failure[i].marshal)
	}
	return b
}

// Puts calls f for every put in the txn, both branches and nested txns
// included, and stops at the first error.
func (t *TxnRequest) Puts(f func(*PutRequest) error) error {
	for _, ops := range [2][]RequestOp{t.Success, t.Failure} {
		for i := range ops {
			switch op := &ops[i]; {
			case op.Put != nil:
				if err := f(op.Put); err != nil {
					return err
				}
			case op.Txn != nil:
				if err := op.Txn.Puts(f); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
