package raftnode

import (
	"sync"

	"go.etcd.io/raft/v3/raftpb"
)

// proposalQueue holds the normal proposals waiting for the ready loop,
// which steps them into raft together (stepProposals). Stepped one by
// one, each proposal made the leader send every follower its own MsgApp
// (and each follower answer with its own MsgAppResp), and each proposal
// reaching a follower was forwarded to the leader as its own MsgProp; as
// one batch, a Ready's proposals cost one message per peer.
type proposalQueue struct {
	mu   sync.Mutex
	ents []raftpb.Entry
	ids  []uint64
}

// enqueueProposal queues payload (the envelope of request id) for the
// ready loop; the proposer's wait channel receives raft's refusal
// (raft.ErrProposalDropped) or, once applied here, the result.
func (n *Node) enqueueProposal(id uint64, payload []byte) {
	q := &n.props
	q.mu.Lock()
	q.ents = append(q.ents, raftpb.Entry{Data: payload})
	q.ids = append(q.ids, id)
	q.mu.Unlock()
	n.signal()
}

// maxPropBatchBytes bounds the payload of one MsgProp, so that a follower's
// forwarded batch of large requests stays well inside a peer frame
// (maxPeerMsgBytes); a larger single entry still goes alone. A variable
// for tests.
var maxPropBatchBytes = 4 << 20

// stepProposals steps the queued proposals into raft, as one MsgProp per
// maxPropBatchBytes; on the ready loop, before each Ready.
func (n *Node) stepProposals() {
	n.readyProbe.enter(stageProposals)
	q := &n.props
	q.mu.Lock()
	ents, ids := q.ents, q.ids
	// A new slice each time: raft keeps the entries (in its unstable log
	// or a forwarded MsgProp) after Step returns.
	q.ents, q.ids = nil, nil
	q.mu.Unlock()
	for len(ents) > 0 {
		k, size := 1, len(ents[0].Data)
		for k < len(ents) && size+len(ents[k].Data) <= maxPropBatchBytes {
			size += len(ents[k].Data)
			k++
		}
		n.stepProposalBatch(ents[:k:k], ids[:k])
		ents, ids = ents[k:], ids[k:]
	}
}

func (n *Node) stepProposalBatch(ents []raftpb.Entry, ids []uint64) {
	var err error
	n.mu.Lock()
	if n.stopped {
		err = n.stopError()
	} else {
		err = n.rn.Step(raftpb.Message{Type: raftpb.MsgProp, From: n.id, Entries: ents})
	}
	n.mu.Unlock()
	if err != nil {
		for _, id := range ids {
			n.wait.trigger(id, result{err: err})
		}
	}
}
