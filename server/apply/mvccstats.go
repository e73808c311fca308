package apply

import (
	"errors"
	"sync/atomic"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// MVCCStats are the per-member operation counts etcd's mvcc reports
// (etcd_mvcc_range_total, _put_total, _delete_total, _txn_total and
// etcd_debugging_mvcc_total_put_size_in_bytes), counted as etcd counts
// them. etcd wraps every mvcc transaction (a Range, the compare phase and
// the write phase of a Txn, a lease revoke) in metricsTxnWrite, which
// counts the Range, Put and DeleteRange calls made in it (a compare, and a
// put or delete that returns or keeps the previous value, is a Range too)
// and, when it ends, one txn if it made more than one call. Writes are
// counted where they are applied, so on every member; reads on the member
// that serves them.
type MVCCStats struct {
	ranges, puts, deletes, txns atomic.Uint64
	putBytes                    atomic.Int64
}

// MVCCCounts is a snapshot of MVCCStats.
type MVCCCounts struct {
	Ranges, Puts, Deletes, Txns uint64
	// PutBytes is the key and value bytes of every put.
	PutBytes int64
}

// Counts returns the counts so far.
func (s *MVCCStats) Counts() MVCCCounts {
	return MVCCCounts{
		Ranges: s.ranges.Load(), Puts: s.puts.Load(), Deletes: s.deletes.Load(), Txns: s.txns.Load(),
		PutBytes: s.putBytes.Load(),
	}
}

// CountRange counts a Range request served by this member: one mvcc read
// transaction with one Range call.
func (s *MVCCStats) CountRange() { s.ranges.Add(1) }

// mvccTxn is the calls of one etcd mvcc transaction.
type mvccTxn struct {
	ranges, puts, deletes uint64
	putBytes              int64
}

// end counts t as etcd's metricsTxnWrite.End does.
func (s *MVCCStats) end(t mvccTxn) {
	if t.ranges+t.puts+t.deletes > 1 {
		s.txns.Add(1)
	}
	if t.ranges > 0 {
		s.ranges.Add(t.ranges)
	}
	if t.puts > 0 {
		s.puts.Add(t.puts)
		s.putBytes.Add(t.putBytes)
	}
	if t.deletes > 0 {
		s.deletes.Add(t.deletes)
	}
}

// readsPrevious reports whether etcd reads the key before a put (its
// put ranges for ignore_value, ignore_lease and prev_kv).
func readsPrevious(r *pb.PutRequest) bool { return r.IgnoreValue || r.IgnoreLease || r.PrevKv }

// putBytes is the key and value bytes of the puts among changes: the
// values written (for ignore_value, the kept value, as etcd measures it).
func putBytes(changes []mvccpb.Event) int64 {
	var n int64
	for i := range changes {
		if ev := &changes[i]; ev.Type == mvccpb.PUT && ev.Kv != nil {
			n += int64(len(ev.Kv.Key) + len(ev.Kv.Value))
		}
	}
	return n
}

// countTxnChecks adds the calls etcd's compare phase makes after the
// compares: a Range for every put on the path that ignores the value or
// the lease (checkPut).
func countTxnChecks(t *mvccTxn, rt *pb.TxnRequest, path []bool) int {
	used := 0
	for _, op := range branch(rt, path[0]) {
		switch v := op.Request.(type) {
		case *pb.RequestOp_RequestPut:
			if v.RequestPut.IgnoreValue || v.RequestPut.IgnoreLease {
				t.ranges++
			}
		case *pb.RequestOp_RequestTxn:
			n := countTxnChecks(t, v.RequestTxn, path[1+used:])
			used += n + 1
		}
	}
	return used
}

// countTxnOps adds the calls etcd makes executing the ops on the path:
// one per range, put and delete, plus the Range of a put or delete that
// reads the previous value.
func countTxnOps(t *mvccTxn, rt *pb.TxnRequest, path []bool) int {
	used := 0
	for _, op := range branch(rt, path[0]) {
		switch v := op.Request.(type) {
		case *pb.RequestOp_RequestRange:
			t.ranges++
		case *pb.RequestOp_RequestPut:
			t.puts++
			if readsPrevious(v.RequestPut) {
				t.ranges++
			}
		case *pb.RequestOp_RequestDeleteRange:
			t.deletes++
			if v.RequestDeleteRange.PrevKv {
				t.ranges++
			}
		case *pb.RequestOp_RequestTxn:
			n := countTxnOps(t, v.RequestTxn, path[1+used:])
			used += n + 1
		}
	}
	return used
}

// MVCCStats returns the member's mvcc operation counts.
func (a *Applier) MVCCStats() *MVCCStats { return &a.stats }

// countPut counts an applied PutRequest: etcd looks the lease up before
// its mvcc transaction (a missing lease counts nothing), then reads the
// previous value if the put needs it, then puts (unless that read found no
// key for ignore_value or ignore_lease).
func (a *Applier) countPut(r *pb.PutRequest, changes []mvccpb.Event, err error) {
	if errors.Is(err, ErrLeaseNotFound) {
		return
	}
	var t mvccTxn
	if readsPrevious(r) {
		t.ranges = 1
	}
	if err == nil {
		t.puts, t.putBytes = 1, putBytes(changes)
	}
	a.stats.end(t)
}

// countDelete counts an applied DeleteRangeRequest: one DeleteRange, after
// a Range for prev_kv.
func (a *Applier) countDelete(r *pb.DeleteRangeRequest) {
	t := mvccTxn{deletes: 1}
	if r.PrevKv {
		t.ranges = 1
	}
	a.stats.end(t)
}
