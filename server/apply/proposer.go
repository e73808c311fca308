package apply

import "context"

// Proposer is the seam between the RPC layer and the replicated state
// machine: every change to the store is proposed as a Request (or a
// ConfChange) and the caller waits for the Result of its Apply. Today's
// group-commit Loop implements it on one member; a Raft node implements it
// by appending the request to the log and answering the caller once the
// entry is applied on this member.
type Proposer interface {
	// Propose submits r and waits for its result. An error is the
	// proposal's (stopped, ctx ended); the request's own is Result.Err.
	Propose(ctx context.Context, r *Request) (Result, error)
	// ProposeConfChange submits a membership change and waits for it.
	ProposeConfChange(ctx context.Context, cc *ConfChange) (Result, error)
	// AppliedIndex is the index of the last applied entry.
	AppliedIndex() uint64
}

var _ Proposer = (*Loop)(nil)
