package reliability

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"

	"github.com/anishathalye/porcupine"
)

// NumKeys is how many keys the workload touches. Few keys make conflicts
// (and so interesting interleavings) common and keep the model state small
// and comparable with ==.
const NumKeys = 4

// KeyName returns the user key of key index i.
func KeyName(i int) string { return fmt.Sprintf("lin/%d", i) }

// KeyPrefix and KeyPrefixEnd bound every key of the workload.
const (
	KeyPrefix    = "lin/"
	KeyPrefixEnd = "lin0" // '/'+1
)

// KV is one key's value as etcd reports it. Version 0 means absent.
type KV struct {
	Value   string
	Create  int64
	Mod     int64
	Version int64
	Lease   int64 // the attached lease, 0 for none
}

func (kv KV) String() string {
	if kv.Version == 0 {
		return "∅"
	}
	if kv.Lease != 0 {
		return fmt.Sprintf("%q@c%d/m%d/v%d/l%x", kv.Value, kv.Create, kv.Mod, kv.Version, kv.Lease)
	}
	return fmt.Sprintf("%q@c%d/m%d/v%d", kv.Value, kv.Create, kv.Mod, kv.Version)
}

// LeaseTTL is the TTL (seconds) of every lease the workload grants: long
// enough that none expires during a run, so existence only changes by
// grant and revoke.
const LeaseTTL = 600

// RestartTTLSlack is how far past the granted TTL a remaining TTL may be:
// a restarted server extends every lease (etcd by its election timeout in
// lessor.Promote, 1s by default; metastore by lease.restart_grace, 2s), so
// right after a restart a 600s lease may report 601.
const RestartTTLSlack = 5

// State is the model's state: the store's revision, every key and the set
// of leases that exist. It is a comparable value, so porcupine can use ==
// on it.
type State struct {
	Rev  int64
	Keys [NumKeys]KV
	// Leases is the set of existing lease ids, ascending, each as 8
	// big-endian bytes (a string keeps State comparable).
	Leases string
}

// HasLease reports whether lease id exists in s.
func (s State) HasLease(id int64) bool {
	for i := 0; i+8 <= len(s.Leases); i += 8 {
		if leaseAt(s.Leases, i) == id {
			return true
		}
	}
	return false
}

// LeaseIDs returns the existing lease ids, ascending.
func (s State) LeaseIDs() []int64 {
	ids := make([]int64, 0, len(s.Leases)/8)
	for i := 0; i+8 <= len(s.Leases); i += 8 {
		ids = append(ids, leaseAt(s.Leases, i))
	}
	return ids
}

func leaseAt(set string, i int) int64 {
	return int64(binary.BigEndian.Uint64([]byte(set[i : i+8])))
}

// withLeases returns s with the lease set ids (any order, no duplicates).
func (s State) withLeases(ids []int64) State {
	slices.Sort(ids)
	b := make([]byte, 0, 8*len(ids))
	for _, id := range ids {
		b = binary.BigEndian.AppendUint64(b, uint64(id))
	}
	s.Leases = string(b)
	return s
}

// grant adds lease id to s.
func (s State) grant(id int64) State { return s.withLeases(append(s.LeaseIDs(), id)) }

// revoke removes lease id and deletes every key attached to it, all at one
// new revision if any key was attached (etcd deletes them in one txn, which
// makes no revision when it deletes nothing).
func (s State) revoke(id int64) State {
	ids := s.LeaseIDs()
	s = s.withLeases(slices.DeleteFunc(ids, func(x int64) bool { return x == id }))
	deleted := false
	for i, kv := range s.Keys {
		if kv.Version > 0 && kv.Lease == id {
			s.Keys[i] = KV{}
			deleted = true
		}
	}
	if deleted {
		s.Rev++
	}
	return s
}

// OpKind is what an operation does.
type OpKind uint8

// The operations of the workload.
const (
	// OpGet ranges over one key.
	OpGet OpKind = iota
	// OpRangeAll ranges over every key at once (proves multi-key atomicity).
	OpRangeAll
	// OpPut puts a value with prev_kv.
	OpPut
	// OpDelete deletes one key with prev_kv.
	OpDelete
	// OpCAS is a txn: if mod_revision(key) == ExpectMod then put key=value
	// else range key.
	OpCAS
	// OpMultiPut is a txn putting the same value to Key and Key2.
	OpMultiPut
	// OpGrant grants lease Lease (0: the server chooses the id) with
	// LeaseTTL.
	OpGrant
	// OpRevoke revokes lease Lease.
	OpRevoke
	// OpLeasePut puts a value with prev_kv, attached to lease Lease.
	OpLeasePut
	// OpKeepAlive sends one keep-alive for lease Lease on a LeaseKeepAlive
	// stream.
	OpKeepAlive
	// OpTimeToLive asks for lease Lease's remaining TTL.
	OpTimeToLive
	// OpState reads every key and lists the leases: the controller's read
	// at a quiescent point.
	OpState
)

var opNames = [...]string{"get", "range", "put", "delete", "cas", "mput", "grant", "revoke", "lput", "keepalive", "ttl", "state"}

func (k OpKind) String() string { return opNames[k] }

// Input is an operation as invoked.
type Input struct {
	Kind      OpKind
	Key, Key2 int
	Value     string
	ExpectMod int64 // OpCAS
	Lease     int64 // OpGrant (0: server-chosen), OpRevoke, OpLeasePut, OpKeepAlive, OpTimeToLive
}

// The errors with a known outcome (the call changed nothing): etcd's
// rpctypes messages.
const (
	ErrLeaseNotFound = "etcdserver: requested lease not found"
	ErrLeaseExist    = "etcdserver: lease already exists"
)

// Output is what the server answered.
type Output struct {
	// Unknown is set when the call failed: a write may or may not have been
	// applied (its return time is then "never", so porcupine may place it
	// anywhere after its call, or after everything else).
	Unknown bool
	// Rev is the response header's revision.
	Rev int64
	// KV is the key read (OpGet, failed OpCAS) or the prev_kv
	// (OpPut, OpDelete).
	KV KV
	// All is every key for OpRangeAll.
	All [NumKeys]KV
	// Deleted is OpDelete's count.
	Deleted int64
	// Succeeded is OpCAS's branch.
	Succeeded bool
	// Err is the error a call was refused with when that error says the
	// call changed nothing (ErrLeaseNotFound, ErrLeaseExist); the other
	// fields are then unset.
	Err string
	// Lease is the id OpGrant granted.
	Lease int64
	// TTL is OpKeepAlive's TTL (0: the lease does not exist) or
	// OpTimeToLive's remaining TTL (-1: it does not exist); GrantedTTL is
	// OpTimeToLive's granted TTL.
	TTL, GrantedTTL int64
	// Leases is OpState's lease list, encoded as State.Leases.
	Leases string
}

// put returns the state after a put of value to key i at the next
// revision (the caller bumps Rev once per txn).
func (s State) put(i int, value string, rev int64) State { return s.leasePut(i, value, rev, 0) }

// leasePut is put attached to lease (0: none; a put without a lease
// detaches the key from its lease).
func (s State) leasePut(i int, value string, rev, lease int64) State {
	old := s.Keys[i]
	if old.Version == 0 {
		s.Keys[i] = KV{Value: value, Create: rev, Mod: rev, Version: 1, Lease: lease}
	} else {
		s.Keys[i] = KV{Value: value, Create: old.Create, Mod: rev, Version: old.Version + 1, Lease: lease}
	}
	return s
}

// step applies in to s and says whether out is what etcd would answer.
// Unknown outputs accept whatever the write did.
func step(s State, in Input, out Output) (bool, State) {
	switch in.Kind {
	case OpGet:
		return out.Unknown || (out.Rev == s.Rev && out.KV == s.Keys[in.Key]), s
	case OpRangeAll:
		return out.Unknown || (out.Rev == s.Rev && out.All == s.Keys), s
	case OpPut:
		prev := s.Keys[in.Key]
		n := s.put(in.Key, in.Value, s.Rev+1)
		n.Rev = s.Rev + 1
		return out.Unknown || (out.Rev == n.Rev && out.KV == prev), n
	case OpDelete:
		prev := s.Keys[in.Key]
		if prev.Version == 0 {
			// Nothing deleted: no new revision.
			return out.Unknown || (out.Rev == s.Rev && out.Deleted == 0 && out.KV == KV{}), s
		}
		n := s
		n.Rev++
		n.Keys[in.Key] = KV{}
		return out.Unknown || (out.Rev == n.Rev && out.Deleted == 1 && out.KV == prev), n
	case OpCAS:
		cur := s.Keys[in.Key]
		if cur.Mod != in.ExpectMod { // an absent key has mod_revision 0
			return out.Unknown || (!out.Succeeded && out.Rev == s.Rev && out.KV == cur), s
		}
		n := s.put(in.Key, in.Value, s.Rev+1)
		n.Rev = s.Rev + 1
		return out.Unknown || (out.Succeeded && out.Rev == n.Rev), n
	case OpMultiPut:
		n := s.put(in.Key, in.Value, s.Rev+1)
		n = n.put(in.Key2, in.Value, s.Rev+1)
		n.Rev = s.Rev + 1
		return out.Unknown || out.Rev == n.Rev, n
	case OpState:
		return out.Unknown || (out.Rev == s.Rev && out.All == s.Keys && out.Leases == s.Leases), s
	case OpGrant:
		if in.Lease != 0 && s.HasLease(in.Lease) {
			return out.Unknown || out.Err == ErrLeaseExist, s
		}
		if out.Unknown {
			if in.Lease == 0 {
				// NB: a lease the server may have granted under an id
				// nobody learned can never be named by a later call.
				return true, s
			}
			return true, s.grant(in.Lease)
		}
		if out.Err != "" || out.Rev != s.Rev || out.Lease == 0 || in.Lease != 0 && out.Lease != in.Lease || s.HasLease(out.Lease) {
			return false, s
		}
		return true, s.grant(out.Lease)
	case OpRevoke:
		if !s.HasLease(in.Lease) {
			return out.Unknown || out.Err == ErrLeaseNotFound, s
		}
		n := s.revoke(in.Lease)
		return out.Unknown || (out.Err == "" && out.Rev == n.Rev), n
	case OpLeasePut:
		if !s.HasLease(in.Lease) {
			return out.Unknown || out.Err == ErrLeaseNotFound, s
		}
		prev := s.Keys[in.Key]
		n := s.leasePut(in.Key, in.Value, s.Rev+1, in.Lease)
		n.Rev = s.Rev + 1
		return out.Unknown || (out.Err == "" && out.Rev == n.Rev && out.KV == prev), n
	case OpKeepAlive:
		if !s.HasLease(in.Lease) {
			return out.Unknown || out.TTL == 0, s
		}
		return out.Unknown || out.TTL == LeaseTTL, s
	case OpTimeToLive:
		if !s.HasLease(in.Lease) {
			return out.Unknown || out.TTL == -1, s
		}
		return out.Unknown || (out.GrantedTTL == LeaseTTL && out.TTL > 0 && out.TTL <= LeaseTTL+RestartTTLSlack), s
	}
	panic(fmt.Sprintf("unknown op kind %d", in.Kind))
}

// Model is etcd's single-key-space KV semantics with revisions, for
// porcupine. It is not partitioned: the revision is global, so every
// operation orders against every other.
var Model = porcupine.Model{
	Init: func() any { return State{Rev: 1} },
	Step: func(state, input, output any) (bool, any) {
		return step(state.(State), input.(Input), output.(Output))
	},
	Hash: func(state any) uint64 {
		s := state.(State)
		h := fnv.New64a()
		fmt.Fprintf(h, "%d", s.Rev)
		for _, kv := range s.Keys {
			fmt.Fprintf(h, "|%s|%d|%d|%d|%d", kv.Value, kv.Create, kv.Mod, kv.Version, kv.Lease)
		}
		h.Write([]byte(s.Leases))
		return h.Sum64()
	},
	DescribeOperation: func(input, output any) string {
		return describe(input.(Input), output.(Output))
	},
	DescribeState: func(state any) string {
		s := state.(State)
		var b strings.Builder
		fmt.Fprintf(&b, "rev %d", s.Rev)
		for i, kv := range s.Keys {
			fmt.Fprintf(&b, ", %s=%s", KeyName(i), kv)
		}
		b.WriteString(", leases [")
		for i, id := range s.LeaseIDs() {
			if i > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%x", id)
		}
		b.WriteByte(']')
		return b.String()
	},
}

func describe(in Input, out Output) string {
	var call string
	switch in.Kind {
	case OpGet:
		call = fmt.Sprintf("get(%s)", KeyName(in.Key))
	case OpRangeAll:
		call = "range(" + KeyPrefix + "*)"
	case OpState:
		call = "state()"
	case OpPut:
		call = fmt.Sprintf("put(%s, %q)", KeyName(in.Key), in.Value)
	case OpDelete:
		call = fmt.Sprintf("delete(%s)", KeyName(in.Key))
	case OpCAS:
		call = fmt.Sprintf("cas(%s, mod==%d, %q)", KeyName(in.Key), in.ExpectMod, in.Value)
	case OpMultiPut:
		call = fmt.Sprintf("mput(%s, %s, %q)", KeyName(in.Key), KeyName(in.Key2), in.Value)
	case OpGrant:
		call = fmt.Sprintf("grant(%x)", in.Lease)
	case OpRevoke:
		call = fmt.Sprintf("revoke(%x)", in.Lease)
	case OpLeasePut:
		call = fmt.Sprintf("put(%s, %q, lease %x)", KeyName(in.Key), in.Value, in.Lease)
	case OpKeepAlive:
		call = fmt.Sprintf("keepalive(%x)", in.Lease)
	case OpTimeToLive:
		call = fmt.Sprintf("ttl(%x)", in.Lease)
	}
	if out.Unknown {
		return call + " -> unknown"
	}
	if out.Err != "" {
		return call + " -> " + out.Err
	}
	switch in.Kind {
	case OpGet:
		return fmt.Sprintf("%s -> %s @%d", call, out.KV, out.Rev)
	case OpRangeAll:
		parts := make([]string, len(out.All))
		for i, kv := range out.All {
			parts[i] = kv.String()
		}
		return fmt.Sprintf("%s -> [%s] @%d", call, strings.Join(parts, " "), out.Rev)
	case OpState:
		parts := make([]string, len(out.All))
		for i, kv := range out.All {
			parts[i] = kv.String()
		}
		ls := State{Leases: out.Leases}.LeaseIDs()
		return fmt.Sprintf("%s -> [%s] leases %x @%d", call, strings.Join(parts, " "), ls, out.Rev)
	case OpPut, OpLeasePut:
		return fmt.Sprintf("%s -> prev %s @%d", call, out.KV, out.Rev)
	case OpGrant:
		return fmt.Sprintf("%s -> %x @%d", call, out.Lease, out.Rev)
	case OpKeepAlive:
		return fmt.Sprintf("%s -> ttl %d", call, out.TTL)
	case OpTimeToLive:
		return fmt.Sprintf("%s -> ttl %d/%d", call, out.TTL, out.GrantedTTL)
	case OpDelete:
		return fmt.Sprintf("%s -> deleted %d prev %s @%d", call, out.Deleted, out.KV, out.Rev)
	case OpCAS:
		if out.Succeeded {
			return fmt.Sprintf("%s -> ok @%d", call, out.Rev)
		}
		return fmt.Sprintf("%s -> failed, cur %s @%d", call, out.KV, out.Rev)
	}
	return fmt.Sprintf("%s -> @%d", call, out.Rev)
}
