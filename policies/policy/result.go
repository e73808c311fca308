package policy

import "fmt"

// Verdict is a policy's answer.
type Verdict int32

// Verdicts of ABI v1.
const (
	VerdictDeny      Verdict = 0
	VerdictAllow     Verdict = 1
	VerdictNoOpinion Verdict = 2
	VerdictMutated   Verdict = 3
)

func (v Verdict) String() string {
	switch v {
	case VerdictDeny:
		return "deny"
	case VerdictAllow:
		return "allow"
	case VerdictNoOpinion:
		return "no_opinion"
	case VerdictMutated:
		return "mutated"
	}
	return fmt.Sprintf("verdict(%d)", int32(v))
}

// Result is what a handler returns.
type Result struct {
	Verdict  Verdict
	Reason   string
	Mutation []byte
}

// Allow lets the request through (this authorizer or admission step is
// satisfied).
func Allow() Result { return Result{Verdict: VerdictAllow} }

// Deny refuses the request; reason reaches the client in the gRPC error.
func Deny(reason string) Result { return Result{Verdict: VerdictDeny, Reason: reason} }

// Denyf is Deny with a formatted reason.
func Denyf(format string, args ...any) Result {
	return Result{Verdict: VerdictDeny, Reason: fmt.Sprintf(format, args...)}
}

// NoOpinion leaves an authorization to the next authorizer in the chain
// (for admission it means the same as Allow).
func NoOpinion() Result { return Result{Verdict: VerdictNoOpinion} }

// Mutate replaces the request being admitted with msg, a whole protobuf
// message of the same type (see PutRequest.Marshal and friends). The host
// authorizes the replacement again before it goes on.
func Mutate(msg []byte) Result { return Result{Verdict: VerdictMutated, Mutation: msg} }
