package auth

import (
	"context"

	"github.com/metastore-dev/metastore/internal/policyabi"
)

// Decision is an Authorizer's answer for one Request.
type Decision uint8

const (
	// NoOpinion leaves the decision to the next Authorizer of the chain.
	NoOpinion Decision = iota
	// Allow permits the request; the chain stops.
	Allow
	// Deny refuses the request; the chain stops.
	Deny
)

func (d Decision) String() string {
	switch d {
	case Allow:
		return "allow"
	case Deny:
		return "deny"
	default:
		return "no-opinion"
	}
}

// Op is the request's operation: the ABI's op byte. Its values, the flags and
// the permissions are internal/policyabi's (one definition for auth, wasmhost
// and the SDK).
type Op = policyabi.Op

// KeyRange is one key range a request touches, in etcd's convention: an
// empty End is the single Key, End "\x00" every key >= Key, otherwise
// [Key, End).
type KeyRange struct {
	Perm     Perm
	Key, End []byte
}

// Request is what an Authorizer decides on. A Txn is one Request carrying
// the ranges of its compares and of every op of both branches.
type Request struct {
	Op       Op
	Flags    uint8
	Revision int64
	// User is the authenticated user, empty when there is none.
	User string
	// Ranges are the key ranges the request reads or writes, in the order
	// etcd checks them.
	Ranges []KeyRange

	inline [4]KeyRange // backing for Ranges of small requests
}

// Reset prepares a released (or zero) r for a new request.
func (r *Request) Reset(op Op, user string) {
	r.Op, r.Flags, r.Revision, r.User = op, 0, 0, user
	r.Ranges = r.inline[:0]
}

// Release drops r's references (keys, user) so that a pooled Request keeps
// nothing alive.
func (r *Request) Release() {
	clear(r.Ranges)
	r.Ranges = nil
	r.User = ""
}

// Add appends a key range.
func (r *Request) Add(perm Perm, key, end []byte) {
	if r.Ranges == nil {
		r.Ranges = r.inline[:0]
	}
	r.Ranges = append(r.Ranges, KeyRange{Perm: perm, Key: key, End: end})
}

// Authorizer is one member of the authorization chain. Implementations must
// be safe for concurrent use. A Deny may carry the error to return to the
// client (nil means ErrPermissionDenied); other answers carry no error.
type Authorizer interface {
	Authorize(ctx context.Context, r *Request) (Decision, error)
}

// Chain asks its members in order; the first Allow or Deny wins, and if
// every member has no opinion the request is denied.
type Chain []Authorizer

var _ Authorizer = Chain(nil)

// Authorize implements Authorizer.
func (c Chain) Authorize(ctx context.Context, r *Request) (Decision, error) {
	for _, a := range c {
		d, err := a.Authorize(ctx, r)
		switch d {
		case Allow:
			return Allow, nil
		case Deny:
			if err == nil {
				err = ErrPermissionDenied
			}
			return Deny, err
		}
	}
	return Deny, ErrPermissionDenied
}

// Check runs a and turns its decision into an error: nil for Allow, the
// denial's error otherwise (NoOpinion alone denies).
func Check(ctx context.Context, a Authorizer, r *Request) error {
	d, err := a.Authorize(ctx, r)
	switch d {
	case Allow:
		return nil
	case Deny:
		if err != nil {
			return err
		}
	}
	return ErrPermissionDenied
}
