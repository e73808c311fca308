package apply

import (
	"bytes"
	"context"
	"errors"
	"sort"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/metastore-dev/metastore/lease"
	"github.com/metastore-dev/metastore/mvcc"
)

// Errors of the KV operations; the server maps them to etcd's rpctypes.
var (
	ErrKeyNotFound = errors.New("apply: key not found")
	// ErrLeaseNotFound is the lessor's: one sentinel for a missing lease,
	// whether the lessor or Apply finds it missing.
	ErrLeaseNotFound = lease.ErrLeaseNotFound
	ErrNoSpace       = errors.New("apply: database space exceeded")
	// ErrCorrupt refuses changes while the CORRUPT alarm is on (etcd's
	// corrupt applier).
	ErrCorrupt = errors.New("apply: corrupt cluster")
)

// refusedWhenCorrupt reports whether etcd's corrupt applier refuses r: the
// key-value and lease changes (reads are not applied; auth, alarms and
// membership go on, so the alarm can be disarmed).
func refusedWhenCorrupt(r *Request) bool {
	return r.Put != nil || r.DeleteRange != nil || r.Txn != nil || r.Compaction != nil ||
		r.LeaseGrant != nil || r.LeaseRevoke != nil
}

// WriteView is what the KV operations need from a write transaction.
type WriteView interface {
	mvcc.ReadView
	// PutPrev is Put whose previous version has its value only if
	// prevValue (mvcc.WriteTxn.PutPrev).
	PutPrev(key, value []byte, lease int64, prevValue bool) (int64, *mvccpb.KeyValue, error)
	DeleteRange(key, end []byte) ([]mvccpb.KeyValue, error)
	Changes() []mvccpb.Event
}

var _ WriteView = (*mvcc.WriteTxn)(nil)

// rangeEnd turns etcd's wire convention ("\x00" = every key >= key) into the
// mvcc one (empty non-nil end).
func rangeEnd(end []byte) []byte {
	if len(end) == 1 && end[0] == 0 {
		return []byte{}
	}
	return end
}

// Range evaluates a RangeRequest against a view, with etcd's semantics for
// limit, sort and the revision filters. It is used for plain reads, for
// ranges inside transactions and for compares.
func Range(ctx context.Context, rv mvcc.ReadView, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	return rangeKVs(ctx, rv, r, true)
}

// RangePiece is Range without the total count (etcd's txn.Range with
// withTotalCount=false), for reading a range in pieces: the read stops after
// limit+1 keys and Count is the number of keys it read. Everything else
// (keys_only, the sort options' quirks) is Range's.
func RangePiece(ctx context.Context, rv mvcc.ReadView, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	return rangeKVs(ctx, rv, r, false)
}

func rangeKVs(ctx context.Context, rv mvcc.ReadView, r *pb.RangeRequest, total bool) (*pb.RangeResponse, error) {
	limit := r.Limit
	sortOrder := r.SortOrder
	// Sorting on anything but ascending key order, and every revision filter,
	// need the whole range before the limit applies. NB: as etcd's
	// rangeLimit, a target without an order counts as key order here (and is
	// then sorted within what was read).
	needAll := !(sortOrder == pb.RangeRequest_NONE ||
		r.SortTarget == pb.RangeRequest_KEY && sortOrder == pb.RangeRequest_ASCEND) ||
		r.MinModRevision != 0 || r.MaxModRevision != 0 ||
		r.MinCreateRevision != 0 || r.MaxCreateRevision != 0
	if needAll {
		limit = 0
	}
	if limit > 0 {
		limit++ // one extra tells whether there is more
	}
	// The response, the store's result and room for one KV in one
	// allocation (a Get answers one key).
	ra := &rangeResponseAlloc{}
	ro := mvcc.RangeOptions{
		Limit: limit, Rev: r.Revision, Count: r.CountOnly,
		StopAtLimit: !total && limit > 0,
		// A value sort needs the values it then drops.
		KeysOnly: r.KeysOnly && r.SortTarget != pb.RangeRequest_VALUE,
	}
	if len(r.RangeEnd) == 0 {
		ra.rr.KVs = ra.kvs[:0]
		ro.Into = &ra.rr
	}
	rr, err := rv.Range(ctx, r.Key, rangeEnd(r.RangeEnd), ro)
	if err != nil {
		return nil, err
	}
	kvs := rr.KVs
	if r.MaxModRevision != 0 {
		kvs = filterKVs(kvs, func(kv *mvccpb.KeyValue) bool { return kv.ModRevision <= r.MaxModRevision })
	}
	if r.MinModRevision != 0 {
		kvs = filterKVs(kvs, func(kv *mvccpb.KeyValue) bool { return kv.ModRevision >= r.MinModRevision })
	}
	if r.MaxCreateRevision != 0 {
		kvs = filterKVs(kvs, func(kv *mvccpb.KeyValue) bool { return kv.CreateRevision <= r.MaxCreateRevision })
	}
	if r.MinCreateRevision != 0 {
		kvs = filterKVs(kvs, func(kv *mvccpb.KeyValue) bool { return kv.CreateRevision >= r.MinCreateRevision })
	}

	// As etcd: a target other than KEY with no order means ascending; KEY
	// ascending is the natural order and needs no sort.
	if r.SortTarget != pb.RangeRequest_KEY && sortOrder == pb.RangeRequest_NONE {
		sortOrder = pb.RangeRequest_ASCEND
	} else if r.SortTarget == pb.RangeRequest_KEY && sortOrder == pb.RangeRequest_ASCEND {
		sortOrder = pb.RangeRequest_NONE
	}
	if sortOrder != pb.RangeRequest_NONE {
		// NB: sort.Sort is not stable; clients can see the order of ties, so
		// we sort exactly as etcd does: the same algorithm on the same
		// key-ordered input with the same comparisons and swaps.
		sorter := kvSorter{kvs: kvs, less: sortLess(r.SortTarget, kvs)}
		if sortOrder == pb.RangeRequest_DESCEND {
			sort.Sort(sort.Reverse(sorter))
		} else {
			sort.Sort(sorter)
		}
	}

	resp := &ra.resp
	ra.hdr.Revision = rr.Rev
	resp.Header, resp.Count = &ra.hdr, int64(rr.Count)
	if r.Limit > 0 && int64(len(kvs)) > r.Limit {
		kvs = kvs[:r.Limit]
		resp.More = true
	}
	if len(kvs) == 1 {
		resp.Kvs = ra.kv[:]
	} else {
		resp.Kvs = make([]*mvccpb.KeyValue, len(kvs))
	}
	for i := range kvs {
		if r.KeysOnly {
			kvs[i].Value = nil
		}
		resp.Kvs[i] = &kvs[i]
	}
	return resp, nil
}

// rangeResponseAlloc is a response, its header, the store's result and
// room for one KV and its pointer in one allocation (a Get answers one
// key).
type rangeResponseAlloc struct {
	resp pb.RangeResponse
	hdr  pb.ResponseHeader
	kv   [1]*mvccpb.KeyValue
	rr   mvcc.RangeResult
	kvs  [1]mvccpb.KeyValue
}

func filterKVs(kvs []mvccpb.KeyValue, keep func(*mvccpb.KeyValue) bool) []mvccpb.KeyValue {
	out := kvs[:0]
	for i := range kvs {
		if keep(&kvs[i]) {
			out = append(out, kvs[i])
		}
	}
	return out
}

type kvSorter struct {
	kvs  []mvccpb.KeyValue
	less func(i, j int) bool
}

func (s kvSorter) Len() int           { return len(s.kvs) }
func (s kvSorter) Swap(i, j int)      { s.kvs[i], s.kvs[j] = s.kvs[j], s.kvs[i] }
func (s kvSorter) Less(i, j int) bool { return s.less(i, j) }

func sortLess(target pb.RangeRequest_SortTarget, kvs []mvccpb.KeyValue) func(i, j int) bool {
	switch target {
	case pb.RangeRequest_VERSION:
		return func(i, j int) bool { return kvs[i].Version < kvs[j].Version }
	case pb.RangeRequest_CREATE:
		return func(i, j int) bool { return kvs[i].CreateRevision < kvs[j].CreateRevision }
	case pb.RangeRequest_MOD:
		return func(i, j int) bool { return kvs[i].ModRevision < kvs[j].ModRevision }
	case pb.RangeRequest_VALUE:
		return func(i, j int) bool { return bytes.Compare(kvs[i].Value, kvs[j].Value) < 0 }
	default:
		return func(i, j int) bool { return bytes.Compare(kvs[i].Key, kvs[j].Key) < 0 }
	}
}

// checkRange reports the errors a range inside a txn would hit, before any
// write of the txn is made.
func checkRange(rv mvcc.ReadView, r *pb.RangeRequest) error {
	switch {
	case r.Revision == 0:
		return nil
	case r.Revision > rv.Rev():
		return mvcc.ErrFutureRev
	case r.Revision < rv.FirstRev():
		return mvcc.ErrCompacted
	}
	return nil
}

func (a *Applier) checkPut(rv mvcc.ReadView, r *pb.PutRequest) error {
	if r.IgnoreValue || r.IgnoreLease {
		rr, err := rv.Range(context.Background(), r.Key, nil, mvcc.RangeOptions{})
		if err != nil {
			return err
		}
		if len(rr.KVs) == 0 {
			return ErrKeyNotFound
		}
	}
	if r.Lease != 0 && !a.leaseExists(r.Lease) {
		return ErrLeaseNotFound
	}
	return nil
}

// put applies a checked PutRequest.
func put(tx WriteView, r *pb.PutRequest) (*pb.PutResponse, error) {
	val, lease := r.Value, r.Lease
	if r.IgnoreValue || r.IgnoreLease {
		rr, err := tx.Range(context.Background(), r.Key, nil, mvcc.RangeOptions{})
		if err != nil {
			return nil, err
		}
		if len(rr.KVs) == 0 {
			return nil, ErrKeyNotFound
		}
		if r.IgnoreValue {
			val = rr.KVs[0].Value
		}
		if r.IgnoreLease {
			lease = rr.KVs[0].Lease
		}
	}
	rev, prev, err := tx.PutPrev(r.Key, val, lease, r.PrevKv)
	if err != nil {
		return nil, err
	}
	a := &putResponse{hdr: pb.ResponseHeader{Revision: rev}}
	resp := &a.resp
	resp.Header = &a.hdr
	if r.PrevKv && prev != nil {
		resp.PrevKv = prev
	}
	return resp, nil
}

// putResponse is a put's response and its header in one allocation.
type putResponse struct {
	resp pb.PutResponse
	hdr  pb.ResponseHeader
}

// txnResponse is a txn's response, its header and, for a one-op txn (the
// common one), its op response, in one allocation.
type txnResponse struct {
	resp pb.TxnResponse
	hdr  pb.ResponseHeader
	ops  [1]*pb.ResponseOp
}

func deleteRange(tx WriteView, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	deleted, err := tx.DeleteRange(r.Key, rangeEnd(r.RangeEnd))
	if err != nil {
		return nil, err
	}
	rev := tx.Rev()
	if len(tx.Changes()) > 0 {
		rev++
	}
	resp := &pb.DeleteRangeResponse{Header: &pb.ResponseHeader{Revision: rev}, Deleted: int64(len(deleted))}
	if r.PrevKv {
		resp.PrevKvs = make([]*mvccpb.KeyValue, len(deleted))
		for i := range deleted {
			resp.PrevKvs[i] = &deleted[i]
		}
	}
	return resp, nil
}

// Txn evaluation. As etcd: the compares of every (nested) txn are evaluated
// first against the state before any write, giving the path taken; then every
// op on that path is checked; only then are the ops applied, so a failing op
// fails the whole txn and leaves nothing behind.

// comparePath evaluates the compares of rt and of every nested txn on the path
// taken, depth first, in op order; compared counts the compares evaluated.
func comparePath(rv mvcc.ReadView, rt *pb.TxnRequest, compared *uint64) []bool {
	path := []bool{compareAll(rv, rt.Compare, compared)}
	for _, op := range branch(rt, path[0]) {
		if nested := op.GetRequestTxn(); nested != nil {
			path = append(path, comparePath(rv, nested, compared)...)
		}
	}
	return path
}

func branch(rt *pb.TxnRequest, succeeded bool) []*pb.RequestOp {
	if succeeded {
		return rt.Success
	}
	return rt.Failure
}

func compareAll(rv mvcc.ReadView, cmps []*pb.Compare, compared *uint64) bool {
	for _, c := range cmps {
		*compared++
		if !compare(rv, c) {
			return false
		}
	}
	return true
}

// compare holds when every key in the compare's range satisfies it; a missing
// key compares as the zero KeyValue, except that a VALUE compare on a missing
// key is false.
func compare(rv mvcc.ReadView, c *pb.Compare) bool {
	rr, err := rv.Range(context.Background(), c.Key, rangeEnd(c.RangeEnd), mvcc.RangeOptions{})
	if err != nil {
		return false
	}
	if len(rr.KVs) == 0 {
		if c.Target == pb.Compare_VALUE {
			return false
		}
		return compareKV(c, &mvccpb.KeyValue{})
	}
	for i := range rr.KVs {
		if !compareKV(c, &rr.KVs[i]) {
			return false
		}
	}
	return true
}

func compareKV(c *pb.Compare, kv *mvccpb.KeyValue) bool {
	var result int
	switch c.Target {
	case pb.Compare_VALUE:
		result = bytes.Compare(kv.Value, c.GetValue())
	case pb.Compare_CREATE:
		result = cmpInt(kv.CreateRevision, c.GetCreateRevision())
	case pb.Compare_MOD:
		result = cmpInt(kv.ModRevision, c.GetModRevision())
	case pb.Compare_VERSION:
		result = cmpInt(kv.Version, c.GetVersion())
	case pb.Compare_LEASE:
		result = cmpInt(kv.Lease, c.GetLease())
	}
	switch c.Result {
	case pb.Compare_EQUAL:
		return result == 0
	case pb.Compare_NOT_EQUAL:
		return result != 0
	case pb.Compare_GREATER:
		return result > 0
	case pb.Compare_LESS:
		return result < 0
	}
	return true
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// checkTxn checks every op on the path; it returns how many nested txns it
// consumed from path.
func (a *Applier) checkTxn(rv mvcc.ReadView, rt *pb.TxnRequest, path []bool) (int, error) {
	used := 0
	for _, op := range branch(rt, path[0]) {
		var err error
		switch v := op.Request.(type) {
		case *pb.RequestOp_RequestRange:
			err = checkRange(rv, v.RequestRange)
		case *pb.RequestOp_RequestPut:
			err = a.checkPut(rv, v.RequestPut)
		case *pb.RequestOp_RequestTxn:
			var n int
			n, err = a.checkTxn(rv, v.RequestTxn, path[1+used:])
			used += n + 1
		}
		if err != nil {
			return 0, err
		}
	}
	return used, nil
}

// execTxn applies the ops on the path and fills the responses.
func execTxn(ctx context.Context, tx WriteView, rt *pb.TxnRequest, path []bool) (*pb.TxnResponse, int, error) {
	a := &txnResponse{resp: pb.TxnResponse{Succeeded: path[0]}}
	resp := &a.resp
	resp.Header = &a.hdr
	ops := branch(rt, path[0])
	if len(ops) == 1 {
		resp.Responses = a.ops[:]
	} else {
		resp.Responses = make([]*pb.ResponseOp, len(ops))
	}
	used := 0
	for i, op := range ops {
		switch v := op.Request.(type) {
		case *pb.RequestOp_RequestRange:
			r, err := Range(ctx, tx, v.RequestRange)
			if err != nil {
				return nil, 0, err
			}
			resp.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseRange{ResponseRange: r}}
		case *pb.RequestOp_RequestPut:
			r, err := put(tx, v.RequestPut)
			if err != nil {
				return nil, 0, err
			}
			resp.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponsePut{ResponsePut: r}}
		case *pb.RequestOp_RequestDeleteRange:
			r, err := deleteRange(tx, v.RequestDeleteRange)
			if err != nil {
				return nil, 0, err
			}
			resp.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: r}}
		case *pb.RequestOp_RequestTxn:
			r, n, err := execTxn(ctx, tx, v.RequestTxn, path[1+used:])
			if err != nil {
				return nil, 0, err
			}
			used += n + 1
			resp.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseTxn{ResponseTxn: r}}
		default:
			resp.Responses[i] = &pb.ResponseOp{}
		}
	}
	return resp, used, nil
}

// Txn runs a transaction on a view; read-only transactions may run on a
// committed read view, the rest inside a write batch.
func (a *Applier) txn(ctx context.Context, tx WriteView, rt *pb.TxnRequest) (*pb.TxnResponse, error) {
	// As etcd: the compares and checks are one mvcc transaction, the ops a
	// second one; a read-only txn is a single one (mvccstats.go).
	var first mvccTxn
	path := comparePath(tx, rt, &first.ranges)
	_, readOnly := tx.(readOnlyWrite)
	_, err := a.checkTxn(tx, rt, path)
	switch {
	case !readOnly:
		countTxnChecks(&first, rt, path)
	case err == nil:
		countTxnOps(&first, rt, path)
	}
	a.stats.end(first)
	if err != nil {
		return nil, err
	}
	resp, _, err := execTxn(ctx, tx, rt, path)
	if err != nil {
		return nil, err
	}
	if !readOnly {
		var ops mvccTxn
		countTxnOps(&ops, rt, path)
		ops.putBytes = putBytes(tx.Changes())
		a.stats.end(ops)
	}
	rev := tx.Rev()
	if len(tx.Changes()) > 0 {
		rev++
	}
	// NB: only the outer header gets the revision; etcd leaves nested txn
	// headers at zero.
	resp.Header.Revision = rev
	return resp, nil
}

// ReadOnlyTxn evaluates a txn whose ops are all ranges on a read view,
// without entering the apply queue.
func (a *Applier) ReadOnlyTxn(ctx context.Context, rv mvcc.ReadView, rt *pb.TxnRequest) (*pb.TxnResponse, error) {
	return a.txn(ctx, readOnlyWrite{rv}, rt)
}

// IsTxnReadOnly reports whether every op in both branches (nested txns
// included) is a range.
func IsTxnReadOnly(rt *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{rt.Success, rt.Failure} {
		for _, op := range ops {
			switch v := op.Request.(type) {
			case *pb.RequestOp_RequestRange:
			case *pb.RequestOp_RequestTxn:
				if !IsTxnReadOnly(v.RequestTxn) {
					return false
				}
			default:
				return false
			}
		}
	}
	return true
}

// readOnlyWrite lets a read view stand where a write view is expected; the
// caller guarantees no write reaches it.
type readOnlyWrite struct{ mvcc.ReadView }

func (readOnlyWrite) PutPrev([]byte, []byte, int64, bool) (int64, *mvccpb.KeyValue, error) {
	return 0, nil, errors.New("apply: write in a read-only txn")
}
func (readOnlyWrite) DeleteRange([]byte, []byte) ([]mvccpb.KeyValue, error) {
	return nil, errors.New("apply: write in a read-only txn")
}
func (readOnlyWrite) Changes() []mvccpb.Event { return nil }
