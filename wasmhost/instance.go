package wasmhost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"
)

// instance is one instantiated module. It is used by one goroutine at a
// time (the pool hands it out), so its fields need no locks.
type instance struct {
	v   *version
	mod api.Module
	mem api.Memory
	ctx context.Context // carries the instance to the host functions

	fn [2]api.Function // by Hook
	// fuel is the guest's fuel counter (exportFuel), refilled per call.
	fuel   api.MutableGlobal
	buffer api.Function
	reason api.Function
	mutate api.Function

	stack  [2]uint64
	bufPtr uint32
	bufCap uint32
	calls  int
	// memStart is the memory size after init: an instance is recycled for
	// memory only if it grew past the threshold itself.
	memStart uint32

	// Deadline of the current call, checked when the guest runs out of fuel
	// (hostFuel). The clock starts at the first check-in, so a call that
	// finishes within one fuel quantum never reads it.
	callStart int64
	timeout   int64
	timedOut  bool
	// limitHit is the limit the current call reached (see hostLimit).
	limitHit ErrorKind

	// Fuel budget of the current call (0: none) and the fuel charged so
	// far (a quantum per guest check-in, plus what host functions charge;
	// counted with no budget too: it decides when a call needs a CPU slot).
	fuelBudget int64
	fuelUsed   int64
	fuelOut    bool
	// hostUnits is the part of fuelUsed that host functions charged.
	hostUnits int64

	// slot is the CPU slot the current call holds (cpu.go): 0 none, else
	// its class plus one. initing marks instance initialisation (the init
	// class); slotTimedOut a deadline that passed waiting for a slot.
	slot         uint8
	initing      bool
	slotTimedOut bool

	// The sandbox's fake clocks and random source (wasi.go).
	wall, nano int64
	rng        *rand.ChaCha8

	stderr lineWriter
}

type instanceKey struct{}

// clockBase anchors the monotonic clock read by the fuel check.
var clockBase = time.Now()

func monotonic() int64 { return int64(time.Since(clockBase)) }

var (
	errDeadline = errors.New("wasmhost: policy call deadline exceeded")
	errFuel     = errors.New("wasmhost: policy call fuel budget exhausted")
)

// hostFuel is the metering check-in (see wasmbin.AddMetering): the guest
// spent a quantum of fuel; it traps the guest when the current call is past
// its deadline or its fuel budget.
func hostFuel(ctx context.Context, _ api.Module, stack []uint64) {
	inst, _ := ctx.Value(instanceKey{}).(*instance)
	if inst == nil {
		// Every guest entry carries its instance (newInstance, call); a
		// check-in without one has no deadline to honour, so stop it.
		panic(errNoInstance)
	}
	inst.charge(fuelQuantum)
	stack[0] = fuelQuantum
}

// charge accounts units of work done by the current call (by the guest, or
// by a host function on its behalf) and stops the call, by a panic that
// wazero turns into a trap, when it is past its deadline or fuel budget.
// Host functions whose work grows with an argument call it per chunk, so
// the deadline holds inside them too.
func (inst *instance) charge(units int64) {
	inst.fuelUsed += units
	if inst.fuelBudget > 0 && inst.fuelUsed > inst.fuelBudget {
		inst.fuelOut = true
		panic(errFuel)
	}
	if inst.timeout > 0 {
		now := monotonic()
		if inst.callStart == 0 {
			inst.callStart = now
		} else if now-inst.callStart > inst.timeout {
			inst.timedOut = true
			panic(errDeadline)
		}
	}
	if inst.fuelUsed >= fuelQuantum || inst.hostUnits >= hostSlotUnits {
		inst.slotCheck()
	}
}

// hostSlotUnits is how much host work (charged by host functions) a call
// may do before it needs a CPU slot, like a quantum of guest code. It is
// far below a quantum because host work is charged cheaper than it runs
// (a unit per 16 bytes of random_get or of a log line): with the quantum
// as the threshold, eleven callers of a random_get or fd_write loop each
// ran 1–2 ms of host code before they met the slots.
const hostSlotUnits = 1024

// chargeHost is charge for work a host function does for the guest.
func (inst *instance) chargeHost(units int64) {
	inst.hostUnits += units
	inst.charge(units)
}

// maxLogLine bounds one guest log line.
const maxLogLine = 4096

// hostLog implements metastore.log(level, ptr, len).
func hostLog(ctx context.Context, m api.Module, stack []uint64) {
	inst, _ := ctx.Value(instanceKey{}).(*instance)
	if inst == nil {
		return
	}
	level, ptr, n := int32(stack[0]), uint32(stack[1]), uint32(stack[2])
	if n > maxLogLine {
		n = maxLogLine
	}
	// Charged like any host work by size (the call itself is charged by
	// the rewriter as an import call).
	inst.chargeHost(int64(n) >> wasiByteShift)
	b, ok := m.Memory().Read(ptr, n)
	if !ok {
		return
	}
	inst.v.policy.log(level, b)
}

// lineWriter turns a guest's stderr into log lines at level error (a Go
// guest writes its panic message there). It remembers the last line so an
// out-of-memory exit can be told from another trap.
type lineWriter struct {
	inst *instance
	buf  []byte
	last string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.emit(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > maxLogLine {
		w.emit(w.buf)
		w.buf = w.buf[:0]
	}
	return len(p), nil
}

func (w *lineWriter) emit(line []byte) {
	if len(line) == 0 {
		return
	}
	w.last = string(line)
	w.inst.v.policy.log(3, line)
}

// newInstance instantiates the module and runs its start function,
// _initialize and policy_init, all under the one init deadline: the start
// function runs inside InstantiateModule, with the instance's context, so
// its check-ins see the deadline like any call's.
func (v *version) newInstance() (*instance, error) {
	start := time.Now()
	inst := &instance{v: v, initing: true}
	// Init is background work: its guest code runs in the init CPU class
	// (cpu.go), and gives back any slot it took however it ends.
	defer func() { inst.releaseSlot(); inst.initing = false }()
	inst.ctx = context.WithValue(context.Background(), instanceKey{}, inst)
	inst.stderr.inst = inst
	inst.timeout = int64(v.limits.InitTimeout)
	inst.callStart = monotonic() // init is long anyway; count from now
	mod, err := v.rt.InstantiateModule(inst.ctx, v.compiled, v.modCfg)
	if err != nil {
		return nil, fmt.Errorf("instantiate (start function): %w", inst.describe(err))
	}
	inst.mod = mod
	fail := func(err error) (*instance, error) {
		mod.Close(context.Background())
		return nil, err
	}
	inst.mem = mod.ExportedMemory(ExportMemory)
	if g, ok := mod.ExportedGlobal(exportFuel).(api.MutableGlobal); ok {
		inst.fuel = g
	} else {
		return fail(fmt.Errorf("the metered module does not export its fuel counter"))
	}
	inst.fn[HookAuthorize] = mod.ExportedFunction(ExportAuthorize)
	inst.fn[HookAdmit] = mod.ExportedFunction(ExportAdmit)
	inst.buffer = mod.ExportedFunction(ExportBuffer)
	inst.reason = mod.ExportedFunction(ExportReason)
	inst.mutate = mod.ExportedFunction(ExportMutation)
	if v.initRT {
		if err := mod.ExportedFunction(ExportInitRT).CallWithStack(inst.ctx, inst.stack[:]); err != nil {
			return fail(fmt.Errorf("%s: %w", ExportInitRT, inst.describe(err)))
		}
	}
	settings := v.cfg.Settings
	ptr, err := inst.buf(len(settings))
	if err != nil {
		return fail(fmt.Errorf("%s: %w", ExportInit, err))
	}
	if !inst.mem.Write(ptr, settings) {
		return fail(fmt.Errorf("%s: buffer out of bounds", ExportInit))
	}
	inst.stack[0], inst.stack[1] = uint64(ptr), uint64(len(settings))
	if err := mod.ExportedFunction(ExportInit).CallWithStack(inst.ctx, inst.stack[:]); err != nil {
		return fail(fmt.Errorf("%s: %w", ExportInit, inst.describe(err)))
	}
	if rc := int32(inst.stack[0]); rc != 0 {
		reason, _ := inst.readReason()
		if reason == "" {
			reason = fmt.Sprintf("returned %d", rc)
		}
		return fail(fmt.Errorf("%s rejected the settings: %s", ExportInit, reason))
	}
	inst.memStart = inst.mem.Size()
	if f := v.policy.host.events.InstanceCreated; f != nil {
		f(v.cfg.Name, time.Since(start))
	}
	return inst, nil
}

// describe adds what the host knows to a guest error.
func (inst *instance) describe(err error) error {
	if inst.slotTimedOut {
		return fmt.Errorf("deadline of %v exceeded waiting for a CPU slot (other guests held them)", time.Duration(inst.timeout))
	}
	if inst.timedOut {
		return fmt.Errorf("deadline of %v exceeded", time.Duration(inst.timeout))
	}
	if inst.fuelOut {
		return fmt.Errorf("fuel budget of %d units exhausted", inst.fuelBudget)
	}
	var exit *sys.ExitError
	if errors.As(err, &exit) && inst.stderr.last != "" {
		return fmt.Errorf("%w (stderr: %s)", err, inst.stderr.last)
	}
	return err
}

// buf returns a guest buffer of at least n bytes.
func (inst *instance) buf(n int) (uint32, error) {
	if uint32(n) <= inst.bufCap && inst.bufPtr != 0 {
		return inst.bufPtr, nil
	}
	want := max(n, 256)
	inst.stack[0] = uint64(want)
	if err := inst.buffer.CallWithStack(inst.ctx, inst.stack[:]); err != nil {
		return 0, err
	}
	ptr := uint32(inst.stack[0])
	if ptr == 0 {
		return 0, fmt.Errorf("%s(%d) could not allocate", ExportBuffer, want)
	}
	if uint64(ptr)+uint64(want) > uint64(inst.mem.Size()) {
		return 0, fmt.Errorf("%s(%d) returned %d, outside memory", ExportBuffer, want, ptr)
	}
	inst.bufPtr, inst.bufCap = ptr, uint32(want)
	return ptr, nil
}

// callError is a failed guest call with its kind.
type callError struct {
	kind ErrorKind
	err  error
	// broken (KindBadReason only): reading the reason trapped, so the
	// instance must go although the verdict stands.
	broken bool
}

func (e *callError) Error() string { return fmt.Sprintf("%s: %v", e.kind, e.err) }
func (e *callError) Unwrap() error { return e.err }

func badResult(format string, args ...any) *callError {
	return &callError{kind: KindBadResult, err: fmt.Errorf(format, args...)}
}

// call runs one hook with req and reads the guest's answer. The caller
// gives back the CPU slot the call may have taken (releaseSlot).
func (inst *instance) call(hook Hook, req []byte) (Verdict, string, []byte, *callError) {
	inst.calls++
	inst.callStart, inst.timedOut, inst.slotTimedOut, inst.limitHit = 0, false, false, ""
	inst.fuelBudget, inst.fuelUsed, inst.fuelOut, inst.hostUnits = inst.v.limits.Fuel, 0, false, 0
	// A full quantum for this call: what the last call left would make a
	// short call check in for nothing (the clock starts at the first
	// check-in), and the first check-in now marks exactly one quantum of
	// this call's own work (fuelUsed; see slotCheck).
	inst.fuel.Set(fuelQuantum)
	if hook == HookAdmit {
		inst.timeout = int64(inst.v.limits.AdmitTimeout)
	} else {
		inst.timeout = int64(inst.v.limits.AuthorizeTimeout)
	}
	ptr, err := inst.buf(len(req))
	if err != nil {
		return 0, "", nil, inst.classify(err)
	}
	if !inst.mem.Write(ptr, req) {
		return 0, "", nil, badResult("%s buffer out of bounds", ExportBuffer)
	}
	inst.stack[0], inst.stack[1] = uint64(ptr), uint64(len(req))
	if err := inst.fn[hook].CallWithStack(inst.ctx, inst.stack[:]); err != nil {
		return 0, "", nil, inst.classify(err)
	}
	switch v := Verdict(int32(inst.stack[0])); {
	case v == Allow || v == NoOpinion:
		return v, "", nil, nil
	case v == Deny:
		// The verdict is final: a reason that cannot be used is replaced
		// by the caller (Policy.call), never turned into a failed call.
		reason, cerr := inst.readReason()
		if cerr != nil {
			return Deny, "", nil, &callError{kind: KindBadReason, err: cerr, broken: cerr.kind != KindBadResult}
		}
		return Deny, reason, nil, nil
	case v == Mutated && hook == HookAdmit:
		mut, cerr := inst.readMutation()
		return Mutated, "", mut, cerr
	default:
		return 0, "", nil, badResult("%s returned verdict %d", ExportAuthorize+"/"+ExportAdmit, int32(inst.stack[0]))
	}
}

// classify turns a guest error into a callError.
func (inst *instance) classify(err error) *callError {
	switch {
	case inst.timedOut:
		return &callError{kind: KindTimeout, err: inst.describe(err)}
	case inst.fuelOut:
		return &callError{kind: KindFuel, err: inst.describe(err)}
	case inst.limitHit != "":
		return &callError{kind: inst.limitHit, err: inst.describe(err)}
	case strings.Contains(inst.stderr.last, "out of memory") ||
		uint64(inst.mem.Size()) >= uint64(inst.v.limits.MemoryBytes)*9/10:
		return &callError{kind: KindOOM, err: inst.describe(err)}
	}
	return &callError{kind: KindTrap, err: inst.describe(err)}
}

// readSlice calls a ptr<<32|len export and returns a view of guest memory.
func (inst *instance) readSlice(f api.Function, name string, limit int) ([]byte, *callError) {
	if err := f.CallWithStack(inst.ctx, inst.stack[:]); err != nil {
		return nil, inst.classify(err)
	}
	ptr, n := uint32(inst.stack[0]>>32), uint32(inst.stack[0])
	if int64(n) > int64(limit) {
		return nil, badResult("%s is %d bytes, over the %d-byte limit", name, n, limit)
	}
	b, ok := inst.mem.Read(ptr, n)
	if !ok {
		return nil, badResult("%s (%d, %d) is outside memory", name, ptr, n)
	}
	return b, nil
}

func (inst *instance) readReason() (string, *callError) {
	b, cerr := inst.readSlice(inst.reason, ExportReason, inst.v.limits.ReasonBytes)
	if cerr != nil {
		return "", cerr
	}
	if len(b) == 0 {
		return "", badResult("%s is empty", ExportReason)
	}
	if !utf8.Valid(b) {
		return "", badResult("%s is not UTF-8", ExportReason)
	}
	return string(b), nil
}

func (inst *instance) readMutation() ([]byte, *callError) {
	b, cerr := inst.readSlice(inst.mutate, ExportMutation, inst.v.limits.MutationBytes)
	if cerr != nil {
		return nil, cerr
	}
	if len(b) == 0 {
		return nil, badResult("%s is empty", ExportMutation)
	}
	return bytes.Clone(b), nil
}

// recycleReason says why an instance that just served a call should be
// retired, or "".
func (inst *instance) recycleReason() string {
	if inst.calls >= inst.v.limits.RecycleCalls {
		return "calls"
	}
	if size := inst.mem.Size(); size > inst.memStart &&
		uint64(size)*100 > uint64(inst.v.limits.MemoryBytes)*uint64(inst.v.limits.RecycleMemoryPercent) {
		return "memory"
	}
	return ""
}

func (inst *instance) close() {
	inst.mod.Close(context.Background())
}
