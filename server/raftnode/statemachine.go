package raftnode

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"go.etcd.io/raft/v3/raftpb"
)

// StateMachine is what the node drives: the committed log, applied in order,
// once per member. Its methods are called from one goroutine (the node's
// apply goroutine), never concurrently.
//
// Durability: the node hands over only entries durable in this member's log,
// so Apply may commit without an fsync of its own; what it loses in a crash
// is applied again from the log on restart, as long as the applied index is
// stored atomically with the effects (the same Pebble batch).
type StateMachine interface {
	// AppliedState returns the index of the last entry whose effects are
	// stored, and the ConfState stored with it (empty before the first
	// configuration change). Called once, when the node starts.
	AppliedState() (index uint64, cs raftpb.ConfState, err error)
	// Apply applies committed normal entries in log order and returns one
	// result per entry, handed to the entry's proposer when it is waiting
	// on this member. Entries with no Data (raft's own, at each new term)
	// only advance the applied index. An error is fatal: the node stops.
	Apply(entries []Entry) ([]any, error)
	// ApplyConfChange applies a committed configuration change. To accept
	// it, the state machine calls confirm, which applies the change to raft
	// and returns the new ConfState to be stored with the change and its
	// index; to reject it (deterministically, e.g. a removed ID or a
	// duplicate URL), it does not call confirm and returns the rejection as
	// the result. An error is fatal: the node stops.
	ApplyConfChange(cc ConfChange, confirm func() raftpb.ConfState) (any, error)
}

// Entry is one committed normal entry.
type Entry struct {
	Index, Term uint64
	// ID is the proposal's request ID (0 for an entry raft appended itself).
	ID uint64
	// Data is the proposer's payload; nil for raft's empty entries.
	Data []byte
}

// ConfChangeType is the kind of a membership change.
type ConfChangeType int

// Membership changes, carried as raft ConfChange entries as etcd carries them.
const (
	// AddMember adds a voting member.
	AddMember ConfChangeType = iota + 1
	// AddLearner adds a non-voting member that receives the log.
	AddLearner
	// RemoveMember removes a member (voter or learner).
	RemoveMember
	// UpdateMember changes a member's peer URLs.
	UpdateMember
	// PromoteMember makes a learner a voter (raft's AddNode on a learner).
	PromoteMember
)

func (t ConfChangeType) String() string {
	switch t {
	case AddMember:
		return "add-member"
	case AddLearner:
		return "add-learner"
	case RemoveMember:
		return "remove-member"
	case UpdateMember:
		return "update-member"
	case PromoteMember:
		return "promote-member"
	}
	return fmt.Sprintf("ConfChangeType(%d)", int(t))
}

// ConfChange is a membership change, proposed and (once committed) applied.
type ConfChange struct {
	// Index and Term are the entry's (set when applied).
	Index, Term uint64
	// ID is the proposal's request ID (set by the node).
	ID uint64
	// Type is the change; NodeID the member it concerns.
	Type   ConfChangeType
	NodeID uint64
	// PeerURLs are the member's peer URLs (add, update): the node's
	// transport dials them once the change is applied.
	PeerURLs []string
	// Context is the proposer's own payload (e.g. the member record).
	Context []byte
}

// The payload of a normal entry is envelopeV1, the proposal ID (8 bytes,
// big-endian) and the proposer's data. The first byte leaves room for
// another layout later.
const envelopeV1 = 1

var errBadEnvelope = errors.New("raftnode: malformed entry payload")

func encodeEntry(id uint64, data []byte) []byte {
	b := make([]byte, 9+len(data))
	b[0] = envelopeV1
	binary.BigEndian.PutUint64(b[1:], id)
	copy(b[9:], data)
	return b
}

func decodeEntry(b []byte) (id uint64, data []byte, err error) {
	if len(b) == 0 {
		return 0, nil, nil
	}
	if len(b) < 9 || b[0] != envelopeV1 {
		return 0, nil, errBadEnvelope
	}
	return binary.BigEndian.Uint64(b[1:9]), b[9:], nil
}

// confContext is a ConfChange entry's context: JSON, as etcd's member
// records in the same place are (and rare enough not to matter).
type confContext struct {
	ID       uint64         `json:"id"`
	Type     ConfChangeType `json:"type"`
	PeerURLs []string       `json:"peerURLs,omitempty"`
	Context  []byte         `json:"context,omitempty"`
}

// toRaft encodes cc as the raft ConfChange that carries it.
func (cc *ConfChange) toRaft() (raftpb.ConfChange, error) {
	var t raftpb.ConfChangeType
	switch cc.Type {
	case AddMember, PromoteMember:
		t = raftpb.ConfChangeAddNode
	case AddLearner:
		t = raftpb.ConfChangeAddLearnerNode
	case RemoveMember:
		t = raftpb.ConfChangeRemoveNode
	case UpdateMember:
		t = raftpb.ConfChangeUpdateNode
	default:
		return raftpb.ConfChange{}, fmt.Errorf("raftnode: unknown conf change type %d", cc.Type)
	}
	if cc.NodeID == 0 {
		return raftpb.ConfChange{}, errors.New("raftnode: conf change without a member ID")
	}
	ctx, err := json.Marshal(confContext{ID: cc.ID, Type: cc.Type, PeerURLs: cc.PeerURLs, Context: cc.Context})
	if err != nil {
		return raftpb.ConfChange{}, err
	}
	return raftpb.ConfChange{Type: t, NodeID: cc.NodeID, Context: ctx}, nil
}

// confChangeFromRaft decodes a committed raft ConfChange.
func confChangeFromRaft(rc raftpb.ConfChange, index, term uint64) (ConfChange, error) {
	cc := ConfChange{Index: index, Term: term, NodeID: rc.NodeID}
	var c confContext
	if len(rc.Context) > 0 {
		if err := json.Unmarshal(rc.Context, &c); err != nil {
			return cc, fmt.Errorf("raftnode: conf change %d context: %w", index, err)
		}
	}
	cc.ID, cc.PeerURLs, cc.Context, cc.Type = c.ID, c.PeerURLs, c.Context, c.Type
	if cc.Type == 0 {
		switch rc.Type {
		case raftpb.ConfChangeAddNode:
			cc.Type = AddMember
		case raftpb.ConfChangeAddLearnerNode:
			cc.Type = AddLearner
		case raftpb.ConfChangeRemoveNode:
			cc.Type = RemoveMember
		case raftpb.ConfChangeUpdateNode:
			cc.Type = UpdateMember
		}
	}
	return cc, nil
}
