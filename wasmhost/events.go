package wasmhost

import "time"

// ErrorKind classifies a failed policy call or load.
type ErrorKind string

// Error kinds.
const (
	KindTrap      ErrorKind = "trap"       // the guest trapped, panicked or exited
	KindTimeout   ErrorKind = "timeout"    // the call ran past its deadline
	KindOOM       ErrorKind = "oom"        // the guest failed at its memory limit
	KindTable     ErrorKind = "table"      // the guest failed after a table.grow refused at the table limit
	KindStack     ErrorKind = "stack"      // the call's stack passed its depth or bytes limit (ErrStackLimit)
	KindBadResult ErrorKind = "bad_result" // unknown verdict, bad buffer, oversized reason or mutation
	KindInit      ErrorKind = "init"       // instantiation or policy_init failed; no instance to call
	KindLoad      ErrorKind = "load"       // the module was refused at load or reload

	// KindFuel: the call spent its fuel budget (Limits.Fuel), a
	// deterministic work limit beside the deadline.
	KindFuel ErrorKind = "fuel"
	// KindBadReason: a DENY came with a missing, oversized, non-UTF-8 or
	// out-of-bounds reason. The verdict stands with a host-written reason;
	// the kind is only counted, never turned into on_error.
	KindBadReason ErrorKind = "bad_reason"
	// KindBadMutation: an admission mutation left its lane (changed the
	// request's kind, or wrote or deleted outside the policy's prefixes);
	// reported by the adapter that checks it (auth/wasmpolicy).
	KindBadMutation ErrorKind = "bad_mutation"
)

// Events are optional callbacks the host invokes; nil fields are skipped.
// They run on the caller's goroutine (Call, Error) or the pool's background
// goroutine and must not block.
type Events struct {
	// Call reports every completed call with its verdict (after on_error)
	// and latency, for policies whose Config has no Observe. Timing is
	// only taken when one of them is set.
	Call func(policy string, hook Hook, v Verdict, d time.Duration)
	// Error reports a failed call or load.
	Error func(policy string, hook Hook, kind ErrorKind, err error)
	// Log carries a guest's log line (metastore.log import, or a line the
	// guest wrote to stderr), already rate-limited. level is the guest's
	// level: 0 debug, 1 info, 2 warn, 3 error.
	Log func(policy string, level int32, msg string)
	// LogDropped reports lines dropped by the rate limit.
	LogDropped func(policy string, n int)
	// PoolMiss reports a call that found no idle instance and waited.
	PoolMiss func(policy string)
	// Instance reports an instance created (with its instantiate+init time)
	// or discarded (d is 0; reason says why: "error", "calls", "memory",
	// "retired").
	InstanceCreated   func(policy string, d time.Duration)
	InstanceDiscarded func(policy string, reason string)
	// Compiled reports a module compiled (from the cache or not) and
	// validated.
	Compiled func(policy string, d time.Duration)
	// Degraded reports a policy entering (true) or leaving degraded state.
	Degraded func(policy string, degraded bool)
	// Reloaded reports a reload; err is nil on success.
	Reloaded func(policy string, err error)
	// Throttled reports a policy entering the throttled state: a call of
	// it ran to its deadline or fuel budget, so for the next second its
	// calls that run past one fuel quantum get CPU only when no other
	// policy's call waits (Options.GuestSlots).
	Throttled func(policy string)
	// CPUWait reports a call or an instance init that found no CPU slot
	// free and waited for d; class is "normal", "init" or "throttled"
	// (the slot classes, see Options.GuestSlots); ok is false when its
	// deadline passed first (the call then fails as a timeout).
	CPUWait func(policy, class string, d time.Duration, ok bool)
}
