package apply

import (
	"encoding/binary"
	"errors"
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/mvcc"
)

// MaxLeaseTTL is the largest TTL, in seconds, a lease may be granted with
// (etcd's).
const MaxLeaseTTL = 9000000000

// Errors of the lease operations; the server maps them to etcd's rpctypes.
var (
	ErrLeaseExist       = errors.New("apply: lease already exists")
	ErrLeaseTTLTooLarge = errors.New("apply: too large lease TTL")
)

// Lessor is the in-memory lease registry the applier keeps in step with the
// store. The applier calls Grant, Revoke and Checkpointed only once the
// batch that made the change is durable, so the lessor (and everything
// answered from it: keep-alives, TimeToLive) never runs ahead of the store.
// Within a batch the applier answers existence from its own pending
// changes first. *lease.Lessor implements it.
type Lessor interface {
	// Exists reports whether a lease is granted and not revoked.
	Exists(id int64) bool
	// Grant registers a lease granted with ttl seconds.
	Grant(id, ttl int64)
	// Revoke forgets a revoked lease.
	Revoke(id int64)
	// Checkpointed records the remaining TTL now persisted for a lease
	// (seconds; 0 means the full TTL, -1 expired).
	Checkpointed(id, remaining int64)
}

// pendingLeases is what the batch being applied changed in the lease set,
// replayed into the Lessor when the batch finishes.
type pendingLeases struct {
	batch  *mvcc.Batch // the batch it belongs to; nil when empty
	exists map[int64]bool
	ops    []leaseOp
}

type leaseOpKind uint8

const (
	opGrant leaseOpKind = iota
	opRevoke
	opCheckpoint
)

type leaseOp struct {
	kind    leaseOpKind
	id, arg int64 // arg: TTL for a grant, remaining TTL for a checkpoint
}

// leaseExists answers for the state the batch has produced so far.
func (a *Applier) leaseExists(id int64) bool {
	if a.pending.batch != nil {
		if e, ok := a.pending.exists[id]; ok {
			return e
		}
	}
	return a.leases != nil && a.leases.Exists(id)
}

// stageLease records a lease change of batch b, to reach the Lessor once b
// is durable.
func (a *Applier) stageLease(b *mvcc.Batch, op leaseOp) {
	if a.pending.batch != b {
		a.pending.batch = b
		if a.pending.exists == nil {
			a.pending.exists = make(map[int64]bool)
		}
		b.OnFinish(a.finishLeases)
	}
	switch op.kind {
	case opGrant:
		a.pending.exists[op.id] = true
	case opRevoke:
		a.pending.exists[op.id] = false
	}
	a.pending.ops = append(a.pending.ops, op)
}

func (a *Applier) finishLeases(committed bool) {
	if committed && a.leases != nil {
		for _, op := range a.pending.ops {
			switch op.kind {
			case opGrant:
				a.leases.Grant(op.id, op.arg)
			case opRevoke:
				a.leases.Revoke(op.id)
			case opCheckpoint:
				a.leases.Checkpointed(op.id, op.arg)
			}
		}
	}
	a.pending.batch = nil
	clear(a.pending.exists)
	a.pending.ops = a.pending.ops[:0]
}

// Lease record in the store: format(1) uvarint(ttl) varint(remaining).
// remaining is the last checkpointed remaining TTL in seconds: 0 for none
// (the full TTL), -1 when the lease had expired.
const leaseRecordV1 byte = 1

func encodeLease(ttl, remaining int64) []byte {
	b := make([]byte, 0, 1+2*binary.MaxVarintLen64)
	b = append(b, leaseRecordV1)
	b = binary.AppendUvarint(b, uint64(ttl))
	return binary.AppendVarint(b, remaining)
}

func decodeLease(b []byte) (ttl, remaining int64, err error) {
	if len(b) == 0 || b[0] != leaseRecordV1 {
		return 0, 0, fmt.Errorf("apply: unknown lease record format")
	}
	b = b[1:]
	t, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, 0, fmt.Errorf("apply: corrupt lease record")
	}
	r, m := binary.Varint(b[n:])
	if m <= 0 {
		return 0, 0, fmt.Errorf("apply: corrupt lease record")
	}
	return int64(t), r, nil
}

// LoadLeases calls f with every lease persisted in s: its TTL (raised to
// minTTL, as etcd does on recovery when the minimum grew) and its last
// checkpointed remaining TTL (0 if none, -1 if it had expired).
func LoadLeases(s *mvcc.Store, minTTL int64, f func(id, ttl, remaining int64)) error {
	return s.ForEachLease(func(id int64, rec []byte) error {
		ttl, rem, err := decodeLease(rec)
		if err != nil {
			return fmt.Errorf("lease %016x: %w", id, err)
		}
		f(id, max(ttl, minTTL), rem)
		return nil
	})
}

// leaseGrant grants a lease, as etcd's lessor.Grant: id 0 is refused, a TTL
// over MaxLeaseTTL is refused, an existing id is refused, and a TTL below
// the minimum is raised to it (the response carries the raised TTL).
func (a *Applier) leaseGrant(b *mvcc.Batch, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	// As etcd's capped applier: no grants while the NOSPACE alarm is on.
	if a.hasAlarm(pb.AlarmType_NOSPACE) {
		return nil, ErrNoSpace
	}
	if r.ID == 0 {
		return nil, ErrLeaseNotFound
	}
	if r.TTL > MaxLeaseTTL {
		return nil, ErrLeaseTTLTooLarge
	}
	if a.leaseExists(r.ID) {
		return nil, ErrLeaseExist
	}
	ttl := max(r.TTL, a.minLeaseTTL)
	if err := b.SetLease(r.ID, encodeLease(ttl, 0)); err != nil {
		return nil, err
	}
	a.stageLease(b, leaseOp{kind: opGrant, id: r.ID, arg: ttl})
	return &pb.LeaseGrantResponse{Header: &pb.ResponseHeader{Revision: b.Rev()}, ID: r.ID, TTL: ttl}, nil
}

// leaseRevoke deletes every key attached to the lease, in key order, in one
// revision (watchers see all the DELETE events at once), and the lease.
func (a *Applier) leaseRevoke(b *mvcc.Batch, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	if !a.leaseExists(r.ID) {
		return nil, ErrLeaseNotFound
	}
	tx := b.Txn()
	defer tx.End()
	keys, err := tx.LeaseKeys(r.ID)
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if _, err := tx.DeleteRange(k, nil); err != nil {
			return nil, err
		}
	}
	// etcd's lessor deletes each attached key with its own DeleteRange,
	// in one mvcc transaction.
	a.stats.end(mvccTxn{deletes: uint64(len(keys))})
	// The deleted keys leave their tenants' usage, like any other delete.
	if err := a.tenants.Load().account(b, tx.Changes()); err != nil {
		return nil, err
	}
	if err := b.DeleteLease(r.ID); err != nil {
		return nil, err
	}
	a.stageLease(b, leaseOp{kind: opRevoke, id: r.ID})
	rev := tx.Rev()
	if len(tx.Changes()) > 0 {
		rev++
	}
	return &pb.LeaseRevokeResponse{Header: &pb.ResponseHeader{Revision: rev}}, nil
}

// leaseCheckpoint persists the remaining TTLs the lessor measured, so a
// restart restores them. Unknown leases are skipped, as etcd's.
func (a *Applier) leaseCheckpoint(b *mvcc.Batch, r *pb.LeaseCheckpointRequest) (*pb.LeaseCheckpointResponse, error) {
	for _, c := range r.Checkpoints {
		if c == nil || !a.leaseExists(c.ID) {
			continue
		}
		rec, err := b.Lease(c.ID)
		if err != nil {
			return nil, err
		}
		if rec == nil {
			continue
		}
		ttl, _, err := decodeLease(rec)
		if err != nil {
			return nil, err
		}
		rem := c.Remaining_TTL
		switch {
		case rem < 0:
			rem = -1 // expired
		case rem >= ttl:
			rem = 0 // the full TTL
		}
		if err := b.SetLease(c.ID, encodeLease(ttl, rem)); err != nil {
			return nil, err
		}
		a.stageLease(b, leaseOp{kind: opCheckpoint, id: c.ID, arg: rem})
	}
	return &pb.LeaseCheckpointResponse{Header: &pb.ResponseHeader{Revision: b.Rev()}}, nil
}
