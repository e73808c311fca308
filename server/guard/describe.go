package guard

import (
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/auth"

	"github.com/metastore-dev/metastore/internal/policyabi"
)

// Leases is what describing a request needs to know of leases.
type Leases interface {
	// LeaseKeys returns the keys attached to lease id (nil for none or an
	// unknown lease).
	LeaseKeys(id int64) [][]byte
	// LeaseExempt reports whether user may attach a key to a lease, or
	// revoke it, without WRITE on the lease's other keys (etcd: the root
	// role).
	LeaseExempt(user string) bool
}

// Describe resets ar to req as etcd authorizes it: the op, flags, revision
// and every key range with the permission it needs, in etcd's order. It is
// the one description of a request as auth ranges: the server authorizes
// and admits with it and `metastore policy eval` derives a sample's ranges
// with it, so the two cannot answer differently. req is a *pb.RangeRequest,
// *pb.PutRequest, *pb.DeleteRangeRequest, *pb.TxnRequest or
// *pb.LeaseRevokeRequest; leases may be nil (no lease has keys).
//
//   - Range: READ on the range; revision and serializable, keys_only and
//     count_only flags.
//   - Put: WRITE on the key; WRITE on every key already attached to its
//     lease (a key the user could not write would be revoked with it)
//     unless the user is exempt; READ on the key with prev_kv (flag too).
//   - DeleteRange: WRITE on the range; with prev_kv the flag and READ.
//   - Txn: READ on every compare, then every op of both branches (nested
//     txns included; a delete's READ for prev_kv comes before its WRITE).
//   - LeaseRevoke: WRITE on every key attached to the lease unless the user
//     is exempt.
func Describe(ar *auth.Request, user string, req any, leases Leases) {
	switch r := req.(type) {
	case *pb.RangeRequest:
		ar.Reset(policyabi.OpRange, user)
		describeRange(ar, r)
	case *pb.PutRequest:
		ar.Reset(policyabi.OpPut, user)
		describePut(ar, r, leases)
	case *pb.DeleteRangeRequest:
		ar.Reset(policyabi.OpDeleteRange, user)
		describeDeleteRange(ar, r)
	case *pb.TxnRequest:
		ar.Reset(policyabi.OpTxn, user)
		addTxn(ar, r, leases)
	case *pb.LeaseRevokeRequest:
		ar.Reset(policyabi.OpLeaseRevoke, user)
		if leases != nil && !leases.LeaseExempt(user) {
			addKeys(ar, policyabi.PermWrite, leases.LeaseKeys(r.ID))
		}
	default:
		panic("guard: Describe of an unknown request type")
	}
}

func describeRange(ar *auth.Request, r *pb.RangeRequest) {
	ar.Revision = r.Revision
	ar.Flags = rangeFlags(r)
	ar.Add(policyabi.PermRead, r.Key, r.RangeEnd)
}

func rangeFlags(r *pb.RangeRequest) uint8 {
	var f uint8
	if r.Serializable {
		f |= policyabi.FlagSerializable
	}
	if r.KeysOnly {
		f |= policyabi.FlagKeysOnly
	}
	if r.CountOnly {
		f |= policyabi.FlagCountOnly
	}
	return f
}

func describePut(ar *auth.Request, r *pb.PutRequest, leases Leases) {
	if r.PrevKv {
		ar.Flags = policyabi.FlagPrevKV
	}
	addPut(ar, r, leases)
}

// describeDeleteRange adds what a delete needs as etcd checks it.
func describeDeleteRange(ar *auth.Request, r *pb.DeleteRangeRequest) {
	ar.Add(policyabi.PermWrite, r.Key, r.RangeEnd)
	if r.PrevKv {
		ar.Flags = policyabi.FlagPrevKV
		ar.Add(policyabi.PermRead, r.Key, r.RangeEnd)
	}
}

// addPut adds a put's ranges (see Describe).
func addPut(ar *auth.Request, r *pb.PutRequest, leases Leases) {
	ar.Add(policyabi.PermWrite, r.Key, nil)
	if leases != nil && r.Lease != 0 {
		if keys := leases.LeaseKeys(r.Lease); len(keys) > 0 && !leases.LeaseExempt(ar.User) {
			addKeys(ar, policyabi.PermWrite, keys)
		}
	}
	if r.PrevKv {
		ar.Add(policyabi.PermRead, r.Key, nil)
	}
}

func addKeys(ar *auth.Request, perm auth.Perm, keys [][]byte) {
	for _, k := range keys {
		ar.Add(perm, k, nil)
	}
}

// addTxn adds the ranges etcd checks for a txn: READ on every compare, then
// every op of both branches, nested txns included.
func addTxn(ar *auth.Request, rt *pb.TxnRequest, leases Leases) {
	for _, c := range rt.Compare {
		ar.Add(policyabi.PermRead, c.Key, c.RangeEnd)
	}
	for _, ops := range [2][]*pb.RequestOp{rt.Success, rt.Failure} {
		for _, op := range ops {
			switch v := op.Request.(type) {
			case *pb.RequestOp_RequestRange:
				if v.RequestRange != nil {
					ar.Add(policyabi.PermRead, v.RequestRange.Key, v.RequestRange.RangeEnd)
				}
			case *pb.RequestOp_RequestPut:
				if v.RequestPut != nil {
					addPut(ar, v.RequestPut, leases)
				}
			case *pb.RequestOp_RequestDeleteRange:
				if d := v.RequestDeleteRange; d != nil {
					if d.PrevKv {
						ar.Add(policyabi.PermRead, d.Key, d.RangeEnd)
					}
					ar.Add(policyabi.PermWrite, d.Key, d.RangeEnd)
				}
			case *pb.RequestOp_RequestTxn:
				if v.RequestTxn != nil {
					addTxn(ar, v.RequestTxn, leases)
				}
			}
		}
	}
}
