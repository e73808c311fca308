package reliability

import (
	"fmt"
	"hash/fnv"
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
}

func (kv KV) String() string {
	if kv.Version == 0 {
		return "∅"
	}
	return fmt.Sprintf("%q@c%d/m%d/v%d", kv.Value, kv.Create, kv.Mod, kv.Version)
}

// State is the model's state: the store's revision and every key. It is a
// comparable value, so porcupine can use == on it.
type State struct {
	Rev  int64
	Keys [NumKeys]KV
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
)

var opNames = [...]string{"get", "range", "put", "delete", "cas", "mput"}

func (k OpKind) String() string { return opNames[k] }

// Input is an operation as invoked.
type Input struct {
	Kind      OpKind
	Key, Key2 int
	Value     string
	ExpectMod int64 // OpCAS
}

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
}

// put returns the state after a put of value to key i at the next
// revision (the caller bumps Rev once per txn).
func (s State) put(i int, value string, rev int64) State {
	old := s.Keys[i]
	if old.Version == 0 {
		s.Keys[i] = KV{Value: value, Create: rev, Mod: rev, Version: 1}
	} else {
		s.Keys[i] = KV{Value: value, Create: old.Create, Mod: rev, Version: old.Version + 1}
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
			fmt.Fprintf(h, "|%s|%d|%d|%d", kv.Value, kv.Create, kv.Mod, kv.Version)
		}
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
	case OpPut:
		call = fmt.Sprintf("put(%s, %q)", KeyName(in.Key), in.Value)
	case OpDelete:
		call = fmt.Sprintf("delete(%s)", KeyName(in.Key))
	case OpCAS:
		call = fmt.Sprintf("cas(%s, mod==%d, %q)", KeyName(in.Key), in.ExpectMod, in.Value)
	case OpMultiPut:
		call = fmt.Sprintf("mput(%s, %s, %q)", KeyName(in.Key), KeyName(in.Key2), in.Value)
	}
	if out.Unknown {
		return call + " -> unknown"
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
	case OpPut:
		return fmt.Sprintf("%s -> prev %s @%d", call, out.KV, out.Rev)
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
