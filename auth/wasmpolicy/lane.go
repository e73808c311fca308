package wasmpolicy

import (
	"bytes"
	"errors"
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/internal/policyabi"
	"github.com/metastore-dev/metastore/wasmhost"
)

// ErrOutOfLane is wrapped by every CheckMutation error.
var ErrOutOfLane = errors.New("mutation leaves its lane")

// CheckMutation reports whether an admission policy's mutation stays in its
// lane: it must be a message of the admitted kind (decoded strictly: a field
// the kind does not have means it is not one, so a Put-shaped payload is not
// taken for a DeleteRange), and every key and range it touches (Txn: the
// compares and every op of both branches, nested txns included) must lie
// within one of prefixes, or be exactly what the original request already
// had there (an op outside the policy's prefixes may be kept, not changed).
// No prefixes means the policy sees every key, and every key is its lane.
// original is the message the policy was given, of the same kind.
//
// It is pure: the caller still re-authorizes the mutated request as the
// caller (a mutation never reaches what the caller may not).
func CheckMutation(kind wasmhost.AdmitKind, original, mutation []byte, prefixes [][]byte) error {
	var mut, orig []laneItem
	var err error
	if mut, err = laneItems(kind, mutation, true); err != nil {
		return fmt.Errorf("%w: %v", ErrOutOfLane, err)
	}
	if len(prefixes) == 0 {
		return nil
	}
	if orig, err = laneItems(kind, original, false); err != nil {
		return fmt.Errorf("%w: the original request: %v", ErrOutOfLane, err)
	}
	kept := make([]bool, len(orig))
next:
	for _, it := range mut {
		for _, p := range prefixes {
			if rangeWithin(it.key, it.end, p) {
				continue next
			}
		}
		for i, o := range orig {
			if !kept[i] && o.what == it.what && bytes.Equal(o.msg, it.msg) {
				kept[i] = true
				continue next
			}
		}
		return fmt.Errorf("%w: %s %s is outside the policy's prefixes %s and not in the original request",
			ErrOutOfLane, it.what, describeRange(it.key, it.end), describePrefixes(prefixes))
	}
	return nil
}

// laneItem is one key range a message touches, with the encoding of the
// part that touches it (for "kept unchanged").
type laneItem struct {
	what     string // put, delete, range, compare
	key, end []byte
	msg      []byte
}

var kindNames = map[wasmhost.AdmitKind]string{
	policyabi.AdmitPut: "PutRequest", policyabi.AdmitDeleteRange: "DeleteRangeRequest", policyabi.AdmitTxn: "TxnRequest",
}

// laneItems decodes msg as kind; strict refuses fields the kind lacks.
func laneItems(kind wasmhost.AdmitKind, msg []byte, strict bool) ([]laneItem, error) {
	name := kindNames[kind]
	if name == "" {
		return nil, fmt.Errorf("unknown admission kind %d", kind)
	}
	var items []laneItem
	var err error
	switch kind {
	case policyabi.AdmitPut:
		m := &pb.PutRequest{}
		if err = m.Unmarshal(msg); err == nil && strict && len(m.XXX_unrecognized) > 0 {
			err = errNotKind
		}
		if err == nil {
			items, err = putItems(items, m)
		}
	case policyabi.AdmitDeleteRange:
		m := &pb.DeleteRangeRequest{}
		if err = m.Unmarshal(msg); err == nil && strict && len(m.XXX_unrecognized) > 0 {
			err = errNotKind
		}
		if err == nil {
			items, err = deleteItems(items, m)
		}
	case policyabi.AdmitTxn:
		m := &pb.TxnRequest{}
		if err = checkTxnDepth(msg); err == nil {
			err = m.Unmarshal(msg)
		}
		if err == nil {
			items, err = txnItems(items, m, strict, 0)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("not a valid %s (the request's kind): %v", name, err)
	}
	return items, nil
}

var errNotKind = errors.New("it has fields the message type does not")

// maxTxnDepth bounds nesting (etcd allows txns in txns; the server's own
// checks bound the op count).
const maxTxnDepth = 64

func putItems(items []laneItem, m *pb.PutRequest) ([]laneItem, error) {
	b, err := m.Marshal()
	return append(items, laneItem{what: "put", key: m.Key, msg: b}), err
}

func deleteItems(items []laneItem, m *pb.DeleteRangeRequest) ([]laneItem, error) {
	b, err := m.Marshal()
	return append(items, laneItem{what: "delete", key: m.Key, end: m.RangeEnd, msg: b}), err
}

func txnItems(items []laneItem, t *pb.TxnRequest, strict bool, depth int) ([]laneItem, error) {
	if depth > maxTxnDepth {
		return nil, errors.New("txns nested too deep")
	}
	if strict && len(t.XXX_unrecognized) > 0 {
		return nil, errNotKind
	}
	for _, c := range t.Compare {
		if strict && len(c.XXX_unrecognized) > 0 {
			return nil, errNotKind
		}
		b, err := c.Marshal()
		if err != nil {
			return nil, err
		}
		items = append(items, laneItem{what: "compare", key: c.Key, end: c.RangeEnd, msg: b})
	}
	for _, branch := range [][]*pb.RequestOp{t.Success, t.Failure} {
		for _, op := range branch {
			if strict && len(op.XXX_unrecognized) > 0 {
				return nil, errNotKind
			}
			var err error
			switch r := op.Request.(type) {
			case *pb.RequestOp_RequestRange:
				if strict && len(r.RequestRange.XXX_unrecognized) > 0 {
					return nil, errNotKind
				}
				var b []byte
				b, err = r.RequestRange.Marshal()
				items = append(items, laneItem{what: "range", key: r.RequestRange.Key, end: r.RequestRange.RangeEnd, msg: b})
			case *pb.RequestOp_RequestPut:
				if strict && len(r.RequestPut.XXX_unrecognized) > 0 {
					return nil, errNotKind
				}
				items, err = putItems(items, r.RequestPut)
			case *pb.RequestOp_RequestDeleteRange:
				if strict && len(r.RequestDeleteRange.XXX_unrecognized) > 0 {
					return nil, errNotKind
				}
				items, err = deleteItems(items, r.RequestDeleteRange)
			case *pb.RequestOp_RequestTxn:
				items, err = txnItems(items, r.RequestTxn, strict, depth+1)
			}
			if err != nil {
				return nil, err
			}
		}
	}
	return items, nil
}

// rangeWithin reports whether every key of [key, end) in etcd's convention
// starts with prefix.
func rangeWithin(key, end, prefix []byte) bool {
	if !bytes.HasPrefix(key, prefix) {
		return false
	}
	switch {
	case len(end) == 0: // the single key
		return true
	case len(end) == 1 && end[0] == 0: // every key >= key
		return len(prefix) == 0
	}
	pend := prefixEnd(prefix)
	return pend == nil || bytes.Compare(end, pend) <= 0
}

// prefixEnd is the first key after every key with prefix (nil: none).
func prefixEnd(prefix []byte) []byte {
	end := bytes.Clone(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

func describeRange(key, end []byte) string {
	switch {
	case len(end) == 0:
		return fmt.Sprintf("of key %q", key)
	case len(end) == 1 && end[0] == 0:
		return fmt.Sprintf("of every key from %q", key)
	}
	return fmt.Sprintf("of [%q, %q)", key, end)
}

func describePrefixes(prefixes [][]byte) string {
	s := "["
	for i, p := range prefixes {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%q", p)
	}
	return s + "]"
}
