package raftnode

import "go.etcd.io/raft/v3/raftpb"

// coalesceAppends merges the appends and append responses of one Ready
// that raft addressed to the same member one after the other.
//
// raft answers every step at once: a leader sends a follower a MsgApp for
// each forwarded MsgProp it steps and an empty one for each advance of the
// commit index, and a follower answers every MsgApp it steps with its own
// MsgAppResp. Under many concurrent writers a Ready thus carries several
// appends per follower of one or two entries each, and each costs a marshal,
// an unmarshal, a raft step and an answer on both sides. Two messages to the
// same member with nothing else to it between them are merged when:
//
//   - both are MsgApp of the same term and the second continues the first
//     (its Index and LogTerm are those of the first's last entry): one MsgApp
//     with both runs of entries and the second's commit index, which the
//     follower handles exactly as the two in a row, and answers once;
//   - both are accepting MsgAppResp of the same term: the one with the
//     higher index stands for both, since the leader only raises a
//     follower's match index to the highest it is told and frees every
//     in-flight append at or below it.
//
// Rejections, heartbeats, votes and everything else pass unchanged and in
// order. maxBytes bounds a merged MsgApp's entry payloads (raft's
// MaxSizePerMsg); msgs is not modified (its entry slices are raft's).
func coalesceAppends(msgs []raftpb.Message, maxBytes uint64) []raftpb.Message {
	if len(msgs) < 2 {
		return msgs
	}
	var (
		out []raftpb.Message // nil until the first merge
		// last[i] is the index in out (or msgs, before a merge) of the
		// latest message to peer[i].
		peer []uint64
		last []int
	)
	for i := range msgs {
		m := &msgs[i]
		k := -1
		for j, to := range peer {
			if to == m.To {
				k = j
				break
			}
		}
		if k >= 0 {
			var prev *raftpb.Message
			if out != nil {
				prev = &out[last[k]]
			} else {
				prev = &msgs[last[k]]
			}
			if mergeable(prev, m, maxBytes) {
				if out == nil {
					out = make([]raftpb.Message, i, len(msgs))
					copy(out, msgs[:i])
					prev = &out[last[k]]
				}
				merge(prev, m)
				continue
			}
		}
		pos := i
		if out != nil {
			pos = len(out)
			out = append(out, *m)
		}
		if k >= 0 {
			last[k] = pos
		} else {
			peer = append(peer, m.To)
			last = append(last, pos)
		}
	}
	if out == nil {
		return msgs
	}
	return out
}

func mergeable(prev, m *raftpb.Message, maxBytes uint64) bool {
	if prev.Type != m.Type || prev.Term != m.Term || prev.From != m.From || prev.To != m.To ||
		prev.Snapshot != nil || m.Snapshot != nil || len(prev.Context) > 0 || len(m.Context) > 0 ||
		len(prev.Responses) > 0 || len(m.Responses) > 0 || prev.Reject || m.Reject {
		return false
	}
	switch m.Type {
	case raftpb.MsgApp:
		lastIndex, lastTerm := prev.Index, prev.LogTerm
		if n := len(prev.Entries); n > 0 {
			lastIndex, lastTerm = prev.Entries[n-1].Index, prev.Entries[n-1].Term
		}
		if m.Index != lastIndex || m.LogTerm != lastTerm || m.Commit < prev.Commit {
			return false
		}
		return len(prev.Entries) == 0 || len(m.Entries) == 0 ||
			payloadBytes(prev.Entries)+payloadBytes(m.Entries) <= maxBytes
	case raftpb.MsgAppResp:
		return prev.RejectHint == 0 && m.RejectHint == 0
	}
	return false
}

// merge folds m into prev; mergeable(prev, m) holds.
func merge(prev, m *raftpb.Message) {
	switch m.Type {
	case raftpb.MsgApp:
		switch {
		case len(m.Entries) == 0:
		case len(prev.Entries) == 0:
			prev.Entries = m.Entries
		default:
			// A new slice: appending to raft's could overwrite entries
			// raft still holds beyond its length.
			ents := make([]raftpb.Entry, 0, len(prev.Entries)+len(m.Entries))
			prev.Entries = append(append(ents, prev.Entries...), m.Entries...)
		}
		prev.Commit = m.Commit
	case raftpb.MsgAppResp:
		prev.Index = max(prev.Index, m.Index)
	}
}

func payloadBytes(ents []raftpb.Entry) uint64 {
	var n uint64
	for i := range ents {
		n += uint64(len(ents[i].Data))
	}
	return n
}
