package wasmhost

import (
	"errors"
	"fmt"
	"runtime"
	"time"
)

// OnError says what a failed policy call (trap, timeout, out of memory, bad
// result, no instance) decides.
type OnError uint8

const (
	// FailClosed denies an authorization and rejects an admission (the
	// default: "deny" / "reject").
	FailClosed OnError = iota
	// FailOpen makes a failed authorization NoOpinion (the next authorizer
	// decides) and a failed admission Allow ("no_opinion" / "ignore").
	FailOpen
)

// ParseOnError accepts the config spellings: deny, reject, no_opinion,
// ignore (and "" for the default).
func ParseOnError(s string) (OnError, error) {
	switch s {
	case "", "deny", "reject":
		return FailClosed, nil
	case "no_opinion", "ignore":
		return FailOpen, nil
	}
	return FailClosed, fmt.Errorf("on_error %q: want deny, reject, no_opinion or ignore", s)
}

func (o OnError) verdict(h Hook) Verdict {
	switch {
	case o == FailClosed:
		return Deny
	case h == HookAuthorize:
		return NoOpinion
	}
	return Allow
}

// Limits bound what one policy may use. Zero fields take the defaults of
// DefaultLimits.
type Limits struct {
	// ModuleBytes caps the size of the .wasm file.
	ModuleBytes int64
	// MemoryBytes caps an instance's linear memory (rounded down to 64 KiB
	// pages).
	MemoryBytes int64
	// RequestBytes caps an encoded request (the server's max request bytes
	// plus the header) and MutationBytes a returned mutation.
	RequestBytes  int
	MutationBytes int
	// ReasonBytes caps a returned reason.
	ReasonBytes int
	// AuthorizeTimeout, AdmitTimeout and InitTimeout are the per-call
	// deadlines; InitTimeout covers _initialize plus policy_init.
	AuthorizeTimeout time.Duration
	AdmitTimeout     time.Duration
	InitTimeout      time.Duration
	// PoolWait bounds how long a call queues for an idle instance (the
	// caller's context may end it sooner). It is not part of the guest's
	// deadline: a waiter's time depends on the load (callers ahead of it,
	// an instance being re-created after a discard or a recycle), not on
	// what one guest does, and every guest call it waits behind is itself
	// bounded by its deadline.
	PoolWait time.Duration
	// Fuel is a per-call work budget (authorize and admit; 0: none), in
	// fuel units: about one guest instruction each (a call of the host 64),
	// and for host functions one per 16 bytes or 8 per element they handle. It
	// is deterministic where the deadline is not (a descheduled thread),
	// counted in quanta of 100,000 guest units. A call over it fails with
	// KindFuel.
	Fuel int64
	// Instances is the number of warm instances kept (default GOMAXPROCS).
	Instances int
	// RecycleCalls retires an instance after that many calls.
	RecycleCalls int
	// RecycleMemoryPercent retires an instance whose memory passes that
	// share of MemoryBytes.
	RecycleMemoryPercent int
	// DegradedErrors errors within DegradedWindow mark the policy degraded.
	DegradedErrors int
	DegradedWindow time.Duration

	// Structural limits, checked on the module as submitted before it is
	// compiled (a module over one is refused with a LoadError naming it).
	// CodeBytes caps the code section, Functions the function count
	// (imported and defined), Globals the global count, LocalsPerFunction
	// one function's params plus locals, Tables the table count and
	// TableElements each table's size: a table's maximum is clamped to it, so
	// table.grow past it fails (-1) and the call's failure is counted as
	// KindTable.
	CodeBytes         int64
	Functions         int
	Globals           int
	LocalsPerFunction int
	Tables            int
	TableElements     int
	// StackBytes bounds the estimated frame bytes of the functions on a
	// call's stack and CallDepth its depth; past either the call fails with
	// KindStack (ErrStackLimit).
	StackBytes int64
	CallDepth  int
	// BlocksPerFunction bounds one function's block, loop, if and else
	// instructions plus br_table targets, and CompileCost the sum over
	// functions of blocks² + blocks × locals² / 16: the compiler's time grows
	// with them faster than with the code's size (see RATIONALE.md,
	// "Compile cost"), so a small module could otherwise take minutes to
	// load.
	BlocksPerFunction int
	CompileCost       int64
	// FunctionBytes bounds one function body and Locals the locals of all
	// functions together: the compiler's memory grows with both (one
	// 15 MB function took 16 GB and 28 s to compile; 20,000 functions of
	// 10,000 locals, a 200 KB module, 14 GB and 36 s).
	FunctionBytes int
	Locals        int64
	// TotalMemoryBytes bounds what the policy's warm instances may hold
	// together: Instances × (MemoryBytes + Tables × TableElements × 8 +
	// 4 × StackBytes). With Instances left at its default, the instance
	// count is lowered to fit.
	TotalMemoryBytes int64
}

// DefaultLimits returns the defaults of policy ABI v1.
func DefaultLimits() Limits {
	return Limits{
		ModuleBytes:          32 << 20,
		MemoryBytes:          16 << 20,
		RequestBytes:         1536*1024 + 64*1024,
		MutationBytes:        1536 * 1024,
		ReasonBytes:          1024,
		AuthorizeTimeout:     5 * time.Millisecond,
		AdmitTimeout:         20 * time.Millisecond,
		InitTimeout:          time.Second,
		PoolWait:             time.Second,
		Instances:            runtime.GOMAXPROCS(0),
		RecycleCalls:         100_000,
		RecycleMemoryPercent: 75,
		DegradedErrors:       5,
		DegradedWindow:       10 * time.Second,
		// The example Go policies have ~2,200 functions, 2 MiB of code, 8
		// globals, 21 locals at most and a 6,300-entry table; the defaults
		// leave them 5-15× room.
		CodeBytes:         8 << 20,
		Functions:         20_000,
		Globals:           1_000,
		LocalsPerFunction: 10_000,
		Tables:            8,
		TableElements:     100_000,
		StackBytes:        2 << 20,
		CallDepth:         10_000,
		// The example Go policies: 1,694 blocks in their largest
		// function, a cost of 3.1·10^7; at the limits the compiler
		// takes about 0.5 s for one function, 2 s in all.
		BlocksPerFunction: 5_000,
		CompileCost:       100_000_000,
		// Their largest body is 29 KB, their locals 10,800 in all.
		FunctionBytes:    256 << 10,
		Locals:           100_000,
		TotalMemoryBytes: 4 << 30,
	}
}

// instanceBytes is the most one instance may hold under l: its memory,
// tables (8 bytes an element) and stacks (wazero keeps one per exported
// function it calls, grown by doubling).
func (l Limits) instanceBytes() int64 {
	return l.MemoryBytes + int64(l.Tables)*int64(l.TableElements)*8 + 4*l.StackBytes
}

// withDefaults fills zero fields from DefaultLimits.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	set := func(v *int64, def int64) {
		if *v == 0 {
			*v = def
		}
	}
	seti := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	setd := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	set(&l.ModuleBytes, d.ModuleBytes)
	set(&l.MemoryBytes, d.MemoryBytes)
	seti(&l.RequestBytes, d.RequestBytes)
	seti(&l.MutationBytes, d.MutationBytes)
	seti(&l.ReasonBytes, d.ReasonBytes)
	setd(&l.AuthorizeTimeout, d.AuthorizeTimeout)
	setd(&l.AdmitTimeout, d.AdmitTimeout)
	setd(&l.InitTimeout, d.InitTimeout)
	setd(&l.PoolWait, d.PoolWait)
	set(&l.CodeBytes, d.CodeBytes)
	seti(&l.Functions, d.Functions)
	seti(&l.Globals, d.Globals)
	seti(&l.LocalsPerFunction, d.LocalsPerFunction)
	seti(&l.Tables, d.Tables)
	seti(&l.TableElements, d.TableElements)
	set(&l.StackBytes, d.StackBytes)
	seti(&l.CallDepth, d.CallDepth)
	seti(&l.BlocksPerFunction, d.BlocksPerFunction)
	seti(&l.FunctionBytes, d.FunctionBytes)
	set(&l.Locals, d.Locals)
	set(&l.CompileCost, d.CompileCost)
	set(&l.TotalMemoryBytes, d.TotalMemoryBytes)
	if l.Instances == 0 {
		l.Instances = d.Instances
		if per := l.instanceBytes(); per > 0 && l.TotalMemoryBytes/per < int64(l.Instances) {
			l.Instances = int(max(l.TotalMemoryBytes/per, 1))
		}
	}
	seti(&l.RecycleCalls, d.RecycleCalls)
	seti(&l.RecycleMemoryPercent, d.RecycleMemoryPercent)
	seti(&l.DegradedErrors, d.DegradedErrors)
	setd(&l.DegradedWindow, d.DegradedWindow)
	return l
}

// Validate lists every problem with l (after defaults).
func (l Limits) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if l.ModuleBytes < 0 {
		bad("module size limit %d is negative", l.ModuleBytes)
	}
	if l.Fuel < 0 {
		bad("fuel budget %d is negative", l.Fuel)
	}
	if l.MemoryBytes < 0 || (l.MemoryBytes > 0 && l.MemoryBytes < 1<<16) || l.MemoryBytes > 4<<30 {
		bad("memory limit %d must be between 64KiB and 4GiB", l.MemoryBytes)
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"request bytes", l.RequestBytes}, {"mutation bytes", l.MutationBytes}, {"reason bytes", l.ReasonBytes},
		{"instances", l.Instances}, {"recycle calls", l.RecycleCalls}, {"degraded errors", l.DegradedErrors},
		{"functions", l.Functions}, {"globals", l.Globals}, {"locals per function", l.LocalsPerFunction},
		{"tables", l.Tables}, {"table elements", l.TableElements}, {"call depth", l.CallDepth},
		{"blocks per function", l.BlocksPerFunction}, {"function bytes", l.FunctionBytes}} {
		if f.v < 0 {
			bad("%s %d is negative", f.name, f.v)
		}
	}
	if l.CodeBytes < 0 {
		bad("code size limit %d is negative", l.CodeBytes)
	}
	if l.CompileCost < 0 {
		bad("compile cost %d is negative", l.CompileCost)
	}
	if l.Locals < 0 {
		bad("locals %d is negative", l.Locals)
	}
	if l.TableElements > 1<<28 {
		bad("table elements %d is over 2^28", l.TableElements)
	}
	if l.StackBytes < 0 || l.StackBytes > 1<<30 {
		bad("stack bytes %d must be within 0..1GiB", l.StackBytes)
	}
	if l.CallDepth > 0 && l.StackBytes > 0 && l.StackBytes/int64(l.CallDepth) < 1 {
		bad("call depth %d is over stack bytes %d", l.CallDepth, l.StackBytes)
	}
	if l.TotalMemoryBytes < 0 {
		bad("total memory %d is negative", l.TotalMemoryBytes)
	} else if l.TotalMemoryBytes > 0 && float64(l.Instances)*float64(l.instanceBytes()) > float64(l.TotalMemoryBytes) {
		bad("%d instances × %d bytes (memory, tables, stack) is over the total memory limit %d",
			l.Instances, l.instanceBytes(), l.TotalMemoryBytes)
	}
	if l.RecycleMemoryPercent < 0 || l.RecycleMemoryPercent > 100 {
		bad("recycle memory percent %d must be within 0..100", l.RecycleMemoryPercent)
	}
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"authorize timeout", l.AuthorizeTimeout}, {"admit timeout", l.AdmitTimeout}, {"init timeout", l.InitTimeout}, {"pool wait", l.PoolWait}, {"degraded window", l.DegradedWindow}} {
		if f.v < 0 {
			bad("%s %v is negative", f.name, f.v)
		}
	}
	return errors.Join(errs...)
}

// Config describes one policy.
type Config struct {
	// Name tags metrics and log lines.
	Name string
	// Path is the module file; Binary, when set, is used instead (tests and
	// tools) and Path only names it in errors.
	Path   string
	Binary []byte
	// SHA256 is the hex digest the module must have; empty skips the check
	// (the server's config requires it).
	SHA256 string
	// Settings is handed to policy_init (JSON by convention).
	Settings []byte
	OnError  OnError
	Limits   Limits
	// Observe, when set, is called after every completed call of this
	// policy with its verdict (after on_error) and latency, instead of
	// Events.Call: an embedder binds its per-policy metrics once here
	// rather than looking them up by name on every call. It must not
	// block. Only Load's Config sets it; a Reload keeps it.
	Observe func(hook Hook, v Verdict, d time.Duration)
}
