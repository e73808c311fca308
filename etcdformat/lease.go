package etcdformat

import (
	"errors"

	"google.golang.org/protobuf/encoding/protowire"
)

// Lease is etcd's persisted lease record (leasepb.Lease in etcd's server
// module, which metastore does not import): three int64 fields.
type Lease struct {
	ID  int64
	TTL int64
	// RemainingTTL is the last checkpointed remaining TTL; 0 means none was
	// taken and the lease restarts with its full TTL.
	RemainingTTL int64
}

// Marshal encodes l as etcd does (proto3: zero fields are left out).
func (l Lease) Marshal() []byte {
	var b []byte
	for i, v := range [...]int64{l.ID, l.TTL, l.RemainingTTL} {
		if v != 0 {
			b = protowire.AppendTag(b, protowire.Number(i+1), protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(v))
		}
	}
	return b
}

// UnmarshalLease decodes an etcd lease record; unknown fields are skipped.
func UnmarshalLease(b []byte) (Lease, error) {
	var l Lease
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return Lease{}, protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.VarintType || num > 3 {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return Lease{}, protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return Lease{}, protowire.ParseError(n)
		}
		b = b[n:]
		switch num {
		case 1:
			l.ID = int64(v)
		case 2:
			l.TTL = int64(v)
		case 3:
			l.RemainingTTL = int64(v)
		}
	}
	if l.ID == 0 {
		return Lease{}, errors.New("lease record without an id")
	}
	return l, nil
}
