package wasmbin

import (
	"errors"
	"fmt"
	"strings"
)

// Limit kinds passed to the Metering.Limit import.
const (
	// LimitTable: a table.grow would take a table past TableElements. The
	// host records it and returns; the grow then fails with -1 (the table's
	// maximum is clamped to TableElements).
	LimitTable = 0
	// LimitStack: a call would take the stack past StackBytes (or the call
	// depth past its limit). The host must trap.
	LimitStack = 1
)

// Shifts of the size-proportional fuel charge: a bulk memory instruction
// costs one fuel per 2^MemoryShift bytes, a bulk table instruction one per
// 2^TableShift elements. With sizes below 2^32 a charge stays below 2^30, so
// fuel (at most the host's quantum before the charge) never wraps.
const (
	MemoryShift = 4
	TableShift  = 2
)

// Metering describes how AddMetering connects a module to the host.
type Metering struct {
	// Module names the host module of the imports below.
	Module string
	// Fuel is the host function the guest calls when its fuel runs out:
	// () -> i32, returning the fuel to continue with. The host checks the
	// call's deadline there and traps (panics) when it is past.
	Fuel string
	// Bulk is called, (fuel i32) -> i32, when a bulk instruction's size
	// charge leaves fuel <= 0, before the instruction runs: -fuel is the
	// debt, so the host can refuse work that cannot finish in time.
	Bulk string
	// Limit is called, (kind i32) -> (), when a limit is reached (LimitTable
	// or LimitStack); the host traps for LimitStack.
	Limit string
	// BulkCost is the fixed part of a bulk instruction's charge.
	BulkCost int32
	// StackBytes is the budget of estimated frame bytes of the functions
	// on the call stack; MinFrame is the least a frame is charged, so that
	// the call depth stays below StackBytes/MinFrame. Zero StackBytes
	// disables stack accounting.
	StackBytes int32
	MinFrame   int32
	// TableElements clamps every table's maximum; zero leaves tables alone.
	TableElements uint32
	// FuelExport, when set, exports the fuel global under that name, so
	// the host can refill it before a call: the guest's counter otherwise
	// carries over from the last call, and a call that starts with little
	// left checks in at once although it is short. A module that exports
	// the name itself is refused.
	FuelExport string
}

// FrameOverhead is what a frame is charged beyond its slots: return
// address, frame pointer and saved registers.
const FrameOverhead = 48

// Number of imports AddMetering adds: Fuel, Bulk, Limit.
const addedImports = 3

// AddMetering makes the guest check in with the host regularly and bounds
// its stack and tables:
//
//   - Fuel. A mutable i32 global counts fuel down at every entry of a
//     function that calls others, at the head of every loop and at every
//     bulk memory or table instruction, which is charged in proportion to
//     its size operand; when fuel reaches zero the guest calls the host,
//     which may trap. Those are the only places where a guest can spend
//     unbounded time (straight-line code is finite, recursion goes through
//     function entries), so a runaway guest always reaches a check, and the
//     Go scheduler gets a safe point there: a guest spinning in a loop can
//     neither outlive its deadline nor stall a stop-the-world GC.
//   - Stack. A second global holds the stack budget. Every function that
//     calls others is charged its frame weight (FrameOverhead plus 8 bytes
//     per param, local and operand-stack slot, at least MinFrame) on entry
//     and refunded on every exit (its body is wrapped in a block so that
//     branches to the function label end there; return and tail calls
//     refund first). A leaf function cannot recurse, so it is not charged:
//     the bound is StackBytes plus one leaf frame.
//   - Tables. Every table's maximum is clamped to TableElements, so
//     table.grow past it returns -1 without allocating; the host is told.
//
// The module must be valid (the host validates it before); AddMetering
// still refuses any index that would reach what it adds (an out-of-range
// global, local, function or type index), so no input can touch host state.
//
// The added imports are the last function imports, so every defined
// function's index moves up; AddMetering renumbers calls, ref.func,
// exports, the start function, element segments and the name section.
//
// NB: wazero's WithCloseOnContextDone solves the deadline problem by leaving
// the native code at every loop back-edge and starting a goroutine per
// call; measured on a Go guest it made a policy call 8× slower (see
// docs/benchmarks-wasm.md). A watchdog goroutine that flips a guest global
// would be cheaper still but deadlocks: a stop-the-world GC waits for the
// spinning guest while the watchdog that would stop it is itself stopped.
func AddMetering(m *Module, cfg Metering) error {
	info, err := Inspect(m)
	if err != nil {
		return err
	}
	if info.ImportedTables > 0 && cfg.TableElements > 0 {
		return errors.New("imported tables cannot be bounded")
	}
	if cfg.StackBytes < 0 || cfg.MinFrame < 0 || cfg.BulkCost < 0 || cfg.BulkCost >= 1<<29 {
		return errors.New("bad metering configuration")
	}
	rw := &rewriter{info: info, cfg: cfg, shiftFrom: info.ImportedFuncs}
	if err := rw.checkExports(m); err != nil {
		return err
	}

	// Types of the imports; the original type indices stay as they are.
	fuelType, err := addType(m, nil, []byte{I32})
	if err != nil {
		return err
	}
	bulkType, err := addType(m, []byte{I32}, []byte{I32})
	if err != nil {
		return err
	}
	limitType, err := addType(m, []byte{I32}, nil)
	if err != nil {
		return err
	}
	// Wrapper blocks of multi-value functions need a [] -> results type.
	rw.wrapType = map[uint32]uint32{}
	for _, t := range info.FuncTypes[info.ImportedFuncs:] {
		if res := info.Types[t].Results; len(res) > 1 {
			if _, ok := rw.wrapType[t]; !ok {
				if rw.wrapType[t], err = addType(m, nil, res); err != nil {
					return err
				}
			}
		}
	}

	// The imports go after the existing function imports (the import
	// section's order is free, the function index space's is not).
	var ip []byte
	if s := m.Section(SecImport); s != nil {
		r := &reader{b: s.Payload}
		n := r.u32()
		if r.err != nil {
			return fmt.Errorf("import section: %w", r.err)
		}
		ip = AppendU32(nil, n+addedImports)
		ip = append(ip, s.Payload[r.off:]...)
	} else {
		ip = AppendU32(nil, addedImports)
	}
	for _, imp := range []struct {
		name string
		typ  uint32
	}{{cfg.Fuel, fuelType}, {cfg.Bulk, bulkType}, {cfg.Limit, limitType}} {
		ip = AppendName(ip, cfg.Module)
		ip = AppendName(ip, imp.name)
		ip = append(ip, KindFunc)
		ip = AppendU32(ip, imp.typ)
	}
	m.setSection(SecImport, ip)
	rw.fuelFunc = info.ImportedFuncs
	rw.bulkFunc = info.ImportedFuncs + 1
	rw.limitFunc = info.ImportedFuncs + 2

	// The fuel and stack globals, appended after every other global. Global
	// initialisers may hold ref.func, so they are rewritten too.
	definedGlobals := info.Globals - info.ImportedGlobals
	g := []byte{}
	if s := m.Section(SecGlobal); s != nil {
		r := &reader{b: s.Payload}
		r.u32()
		for i := uint32(0); i < definedGlobals && r.err == nil; i++ {
			g = append(g, r.byte(), r.byte())
			g, err = rw.expr(g, r)
			if err != nil {
				return fmt.Errorf("global %d: %w", i, err)
			}
		}
		if r.err != nil {
			return fmt.Errorf("global section: %w", r.err)
		}
	}
	rw.fuelGlobal = info.Globals
	rw.stackGlobal = info.Globals + 1
	g = append(g, I32, 0x01, 0x41, 0x00, 0x0b) // fuel: mut i32 = 0, the first check comes at once
	g = append(g, I32, 0x01)
	g = append(g, I32Const(cfg.StackBytes)...)
	g = append(g, 0x0b)
	m.setSection(SecGlobal, append(AppendU32(nil, definedGlobals+2), g...))

	if err := rw.exports(m); err != nil {
		return err
	}
	if s := m.Section(SecStart); s != nil {
		r := &reader{b: s.Payload}
		idx := r.u32()
		if r.err != nil {
			return fmt.Errorf("start section: %w", r.err)
		}
		if idx >= info.Funcs() {
			return fmt.Errorf("start function %d out of range", idx)
		}
		s.Payload = AppendU32(nil, rw.fn(idx))
	}
	if err := rw.tables(m); err != nil {
		return err
	}
	if err := rw.elements(m); err != nil {
		return err
	}
	if err := rw.data(m); err != nil {
		return err
	}
	if err := rw.code(m); err != nil {
		return err
	}
	rw.names(m)
	return nil
}

type rewriter struct {
	info      *Info
	cfg       Metering
	shiftFrom uint32 // function indices >= shiftFrom move up by addedImports

	fuelFunc, bulkFunc, limitFunc uint32
	fuelGlobal, stackGlobal       uint32
	wrapType                      map[uint32]uint32

	// By defined function: its analysis, and its entry weight if it is a
	// light leaf (0 otherwise); maxLeaf is the heaviest light leaf.
	analyses   []analysis
	leafWeight []int32
	maxLeaf    int32
}

func (rw *rewriter) fn(idx uint32) uint32 {
	if idx >= rw.shiftFrom {
		return idx + addedImports
	}
	return idx
}

// addType returns the index of the function type (params) -> (results),
// appending it to the type section when absent.
func addType(m *Module, params, results []byte) (uint32, error) {
	want := []byte{0x60}
	want = AppendU32(want, uint32(len(params)))
	want = append(want, params...)
	want = AppendU32(want, uint32(len(results)))
	want = append(want, results...)
	s := m.Section(SecType)
	if s == nil {
		m.setSection(SecType, append([]byte{1}, want...))
		return 0, nil
	}
	r := &reader{b: s.Payload}
	n := r.u32()
	if r.err != nil {
		return 0, fmt.Errorf("type section: %w", r.err)
	}
	body := r.off
	for i := uint32(0); i < n; i++ {
		start := r.off
		form := r.byte()
		if form != 0x60 {
			return 0, fmt.Errorf("type section: unsupported type form 0x%02x", form)
		}
		r.bytes(int(r.u32()))
		r.bytes(int(r.u32()))
		if r.err != nil {
			return 0, fmt.Errorf("type section: %w", r.err)
		}
		if string(s.Payload[start:r.off]) == string(want) {
			return i, nil
		}
	}
	p := AppendU32(nil, n+1)
	p = append(p, s.Payload[body:]...)
	p = append(p, want...)
	s.Payload = p
	return n, nil
}

// checkExports refuses exports of indices out of range before anything is
// renumbered (an export of global N would otherwise export the fuel).
func (rw *rewriter) checkExports(m *Module) error {
	exps, err := m.Exports()
	if err != nil {
		return err
	}
	for _, e := range exps {
		switch {
		case rw.cfg.FuelExport != "" && e.Name == rw.cfg.FuelExport:
			return fmt.Errorf("export %q: the name is reserved for the host", e.Name)
		case e.Kind == KindFunc && e.Index >= rw.info.Funcs(),
			e.Kind == KindGlobal && e.Index >= rw.info.Globals,
			e.Kind == KindTable && e.Index >= uint32(len(rw.info.Tables)):
			return fmt.Errorf("export %q: index %d out of range", e.Name, e.Index)
		}
	}
	return nil
}

func (rw *rewriter) exports(m *Module) error {
	var exps []Export
	if m.Section(SecExport) != nil {
		var err error
		if exps, err = m.Exports(); err != nil {
			return err
		}
	}
	n := len(exps)
	if rw.cfg.FuelExport != "" {
		n++
	}
	if n == 0 {
		return nil
	}
	p := AppendU32(nil, uint32(n))
	for _, e := range exps {
		p = AppendName(p, e.Name)
		p = append(p, e.Kind)
		if e.Kind == KindFunc {
			e.Index = rw.fn(e.Index)
		}
		p = AppendU32(p, e.Index)
	}
	if rw.cfg.FuelExport != "" {
		p = AppendName(p, rw.cfg.FuelExport)
		p = append(p, KindGlobal)
		p = AppendU32(p, rw.fuelGlobal)
	}
	m.setSection(SecExport, p)
	return nil
}

// tables clamps every defined table's maximum to TableElements.
func (rw *rewriter) tables(m *Module) error {
	s := m.Section(SecTable)
	limit := rw.cfg.TableElements
	if s == nil || limit == 0 {
		return nil
	}
	r := &reader{b: s.Payload}
	n := r.u32()
	p := AppendU32(nil, n)
	for i := uint32(0); i < n && r.err == nil; i++ {
		p = append(p, r.byte()) // reftype
		t := readLimits(r)
		if t.Min > limit {
			return fmt.Errorf("table %d: %d elements, over the limit of %d", i, t.Min, limit)
		}
		if !t.HasMax || t.Max > limit {
			t.Max = limit
		}
		p = append(p, 0x01)
		p = AppendU32(p, t.Min)
		p = AppendU32(p, t.Max)
	}
	if r.err != nil {
		return fmt.Errorf("table section: %w", r.err)
	}
	s.Payload = p
	return nil
}

func (rw *rewriter) elements(m *Module) error {
	s := m.Section(SecElement)
	if s == nil {
		return nil
	}
	r := &reader{b: s.Payload}
	n := r.u32()
	p := AppendU32(nil, n)
	var err error
	for i := uint32(0); i < n && r.err == nil; i++ {
		flags := r.u32()
		if flags > 7 {
			return fmt.Errorf("element segment %d: bad flags %d", i, flags)
		}
		p = AppendU32(p, flags)
		if flags == 2 || flags == 6 {
			p = AppendU32(p, r.u32()) // table index
		}
		if flags&1 == 0 { // active: offset expression
			if p, err = rw.expr(p, r); err != nil {
				return fmt.Errorf("element segment %d: %w", i, err)
			}
		}
		if flags&3 != 0 { // elemkind or reftype byte
			p = append(p, r.byte())
		}
		count := r.u32()
		p = AppendU32(p, count)
		for j := uint32(0); j < count && r.err == nil; j++ {
			if flags&4 == 0 {
				idx := r.u32()
				if idx >= rw.info.Funcs() && r.err == nil {
					return fmt.Errorf("element segment %d: function index %d out of range", i, idx)
				}
				p = AppendU32(p, rw.fn(idx))
			} else if p, err = rw.expr(p, r); err != nil {
				return fmt.Errorf("element segment %d: %w", i, err)
			}
		}
	}
	if r.err != nil {
		return fmt.Errorf("element section: %w", r.err)
	}
	s.Payload = p
	return nil
}

// data checks the data segments' offset expressions (nothing to renumber,
// but a global.get there must not reach the added globals).
func (rw *rewriter) data(m *Module) error {
	s := m.Section(SecData)
	if s == nil {
		return nil
	}
	r := &reader{b: s.Payload}
	n := r.u32()
	for i := uint32(0); i < n && r.err == nil; i++ {
		flags := r.u32()
		if flags == 2 {
			r.u32()
		}
		if flags != 1 {
			if _, err := rw.expr(nil, r); err != nil {
				return fmt.Errorf("data segment %d: %w", i, err)
			}
		}
		r.bytes(int(r.u32()))
	}
	if r.err != nil {
		return fmt.Errorf("data section: %w", r.err)
	}
	return nil
}

// expr copies a constant expression up to and including its end.
func (rw *rewriter) expr(dst []byte, r *reader) ([]byte, error) {
	for {
		start := r.off
		op := r.byte()
		if r.err != nil {
			return dst, r.err
		}
		switch op {
		case 0x23: // global.get
			if idx := r.u32(); idx >= rw.info.Globals && r.err == nil {
				return dst, fmt.Errorf("global index %d out of range (%d globals)", idx, rw.info.Globals)
			}
		case 0xd2: // ref.func
			idx := r.u32()
			if idx >= rw.info.Funcs() && r.err == nil {
				return dst, fmt.Errorf("function index %d out of range", idx)
			}
			dst = append(dst, op)
			dst = AppendU32(dst, rw.fn(idx))
			continue
		default:
			if err := skipImmediates(r, op); err != nil {
				return dst, err
			}
		}
		if r.err != nil {
			return dst, r.err
		}
		dst = append(dst, r.b[start:r.off]...)
		if op == 0x0b {
			return dst, nil
		}
	}
}

func (rw *rewriter) code(m *Module) error {
	s := m.Section(SecCode)
	if s == nil {
		return nil
	}
	if err := rw.weighLeaves(s.Payload); err != nil {
		return err
	}
	r := &reader{b: s.Payload}
	n := r.u32()
	out := AppendU32(make([]byte, 0, len(s.Payload)+len(s.Payload)/4), n)
	var body []byte
	for i := uint32(0); i < n; i++ {
		size := r.u32()
		fn := r.bytes(int(size))
		if r.err != nil {
			return fmt.Errorf("code section: %w", r.err)
		}
		var err error
		body, err = rw.body(body[:0], rw.info.ImportedFuncs+i, fn)
		if err != nil {
			return fmt.Errorf("function body %d: %w", i, err)
		}
		out = AppendU32(out, uint32(len(body)))
		out = append(out, body...)
	}
	s.Payload = out
	return nil
}

// check emits: fuel -= cost; if fuel <= 0 { fuel = check() }; or for a
// cost above bigCharge, fuel = bulk(fuel), so that the host counts the whole
// debt against the budget and the deadline.
func (rw *rewriter) check(dst []byte, cost int32) []byte {
	dst = append(dst, 0x23)
	dst = AppendU32(dst, rw.fuelGlobal)
	dst = append(dst, I32Const(cost)...)
	dst = append(dst, 0x6b, 0x24) // i32.sub, global.set
	dst = AppendU32(dst, rw.fuelGlobal)
	dst = append(dst, 0x23)
	dst = AppendU32(dst, rw.fuelGlobal)
	dst = append(dst, 0x41, 0x00, 0x4c, 0x04, 0x40) // i32.const 0, i32.le_s, if
	if cost > bigCharge {
		dst = append(dst, 0x23)
		dst = AppendU32(dst, rw.fuelGlobal)
		dst = append(dst, 0x10)
		dst = AppendU32(dst, rw.bulkFunc)
	} else {
		dst = append(dst, 0x10)
		dst = AppendU32(dst, rw.fuelFunc)
	}
	dst = append(dst, 0x24)
	dst = AppendU32(dst, rw.fuelGlobal)
	return append(dst, 0x0b)
}

// bigCharge: a check charging more goes through the bulk import.
const bigCharge = 1024

// weighLeaves analyzes every body and finds the light leaf functions (see
// LightLeaf) and their entry weights.
func (rw *rewriter) weighLeaves(payload []byte) error {
	info := rw.info
	r := &reader{b: payload}
	n := r.u32()
	rw.analyses = make([]analysis, 0, min(n, uint32(len(payload))))
	rw.leafWeight = make([]int32, 0, min(n, uint32(len(payload))))
	for i := uint32(0); i < n; i++ {
		fn := r.bytes(int(r.u32()))
		if r.err != nil {
			return fmt.Errorf("code section: %w", r.err)
		}
		fr := &reader{b: fn}
		groups := fr.u32()
		for j := uint32(0); j < groups && fr.err == nil; j++ {
			fr.u32()
			fr.byte()
		}
		if fr.err != nil {
			return fmt.Errorf("function body %d: locals: %w", i, fr.err)
		}
		code := fn[fr.off:]
		fidx := info.ImportedFuncs + i
		if fidx >= info.Funcs() {
			return fmt.Errorf("function body %d has no function", i)
		}
		a, err := rw.analyze(code, uint64(len(info.Types[info.FuncTypes[fidx]].Results)))
		if err != nil {
			return fmt.Errorf("function body %d: %w", i, err)
		}
		rw.analyses = append(rw.analyses, a)
		w := int32(0)
		if !a.calls {
			p, err := rw.weigh(code, func(byte, uint32) int64 { return 0 })
			if err != nil {
				return fmt.Errorf("function body %d: %w", i, err)
			}
			if p[0] <= LightLeaf {
				w = p[0]
				rw.maxLeaf = max(rw.maxLeaf, w)
			}
		}
		rw.leafWeight = append(rw.leafWeight, w)
	}
	return nil
}

// callWeight is what a call costs beyond its own instruction: an import's
// host work, or a light leaf's entry chunk.
func (rw *rewriter) callWeight(op byte, idx uint32) int64 {
	if op == 0x11 || op == 0x13 {
		return int64(max(HostCallWeight, rw.maxLeaf))
	}
	if idx < rw.info.ImportedFuncs {
		return HostCallWeight
	}
	if i := idx - rw.info.ImportedFuncs; i < uint32(len(rw.leafWeight)) {
		return int64(rw.leafWeight[i])
	}
	return 0
}

// charge emits: stack -= w; if stack < 0 { limit(LimitStack) }.
func (rw *rewriter) charge(dst []byte, w int32) []byte {
	dst = append(dst, 0x23)
	dst = AppendU32(dst, rw.stackGlobal)
	dst = append(dst, I32Const(w)...)
	dst = append(dst, 0x6b, 0x24) // i32.sub, global.set
	dst = AppendU32(dst, rw.stackGlobal)
	dst = append(dst, 0x23)
	dst = AppendU32(dst, rw.stackGlobal)
	dst = append(dst, 0x41, 0x00, 0x48, 0x04, 0x40) // i32.const 0, i32.lt_s, if
	dst = append(dst, I32Const(LimitStack)...)
	dst = append(dst, 0x10)
	dst = AppendU32(dst, rw.limitFunc)
	return append(dst, 0x0b)
}

// refund emits: stack += w.
func (rw *rewriter) refund(dst []byte, w int32) []byte {
	dst = append(dst, 0x23)
	dst = AppendU32(dst, rw.stackGlobal)
	dst = append(dst, I32Const(w)...)
	dst = append(dst, 0x6a, 0x24) // i32.add, global.set
	return AppendU32(dst, rw.stackGlobal)
}

// bulk emits, with the size operand n on top of the stack (kept there):
// fuel -= base + charge(n); if fuel <= 0 { fuel = bulk(fuel) }; and for
// table.grow of table t, if size(t)+n > TableElements { limit(LimitTable) }.
// charge(n) is n>>shift, or for memory.grow min(n, 65536) pages of 4096
// fuels, or for table.grow min(n, TableElements)>>TableShift (a grow past
// the limit fails without work).
func (rw *rewriter) bulk(dst []byte, scratch uint32, shift int32, growTable int64) []byte {
	clamp := uint32(0)
	switch {
	case shift == growPages:
		clamp = 65536
	case growTable >= 0 && rw.cfg.TableElements > 0:
		clamp = rw.cfg.TableElements
	}
	dst = append(dst, 0x21) // local.set scratch
	dst = AppendU32(dst, scratch)
	dst = append(dst, 0x23)
	dst = AppendU32(dst, rw.fuelGlobal)
	dst = append(dst, 0x20)
	dst = AppendU32(dst, scratch)
	if clamp > 0 { // min(n, clamp), unsigned
		dst = append(dst, I32Const(int32(clamp))...)
		dst = append(dst, 0x20)
		dst = AppendU32(dst, scratch)
		dst = append(dst, I32Const(int32(clamp))...)
		dst = append(dst, 0x49, 0x1b) // i32.lt_u, select
	}
	if shift == growPages {
		dst = append(dst, I32Const(16-MemoryShift)...)
		dst = append(dst, 0x74, 0x6b) // i32.shl, i32.sub
	} else {
		dst = append(dst, I32Const(shift)...)
		dst = append(dst, 0x76, 0x6b) // i32.shr_u, i32.sub
	}
	dst = append(dst, I32Const(rw.cfg.BulkCost)...)
	dst = append(dst, 0x6b, 0x24) // i32.sub, global.set
	dst = AppendU32(dst, rw.fuelGlobal)
	dst = append(dst, 0x23)
	dst = AppendU32(dst, rw.fuelGlobal)
	dst = append(dst, 0x41, 0x00, 0x4c, 0x04, 0x40, 0x23) // i32.const 0, i32.le_s, if, global.get
	dst = AppendU32(dst, rw.fuelGlobal)
	dst = append(dst, 0x10)
	dst = AppendU32(dst, rw.bulkFunc)
	dst = append(dst, 0x24)
	dst = AppendU32(dst, rw.fuelGlobal)
	dst = append(dst, 0x0b)
	if growTable >= 0 && rw.cfg.TableElements > 0 {
		dst = append(dst, 0xfc, 16) // table.size t
		dst = AppendU32(dst, uint32(growTable))
		dst = append(dst, 0xad, 0x20) // i64.extend_i32_u, local.get
		dst = AppendU32(dst, scratch)
		dst = append(dst, 0xad, 0x7c) // i64.extend_i32_u, i64.add
		dst = append(dst, I64Const(int64(rw.cfg.TableElements))...)
		dst = append(dst, 0x56, 0x04, 0x40) // i64.gt_u, if
		dst = append(dst, I32Const(LimitTable)...)
		dst = append(dst, 0x10)
		dst = AppendU32(dst, rw.limitFunc)
		dst = append(dst, 0x0b)
	}
	dst = append(dst, 0x20) // local.get scratch
	return AppendU32(dst, scratch)
}

// growPages marks memory.grow, charged per 64 KiB page it adds (wazero
// copies and zeroes the memory as it grows).
const growPages = -1

// bulkShift returns the charge shift of a 0xfc instruction that is charged
// by size, or -1.
func bulkShift(sub uint32) int32 {
	switch sub {
	case 8, 10, 11: // memory.init, memory.copy, memory.fill
		return MemoryShift
	case 12, 14, 15, 17: // table.init, table.copy, table.grow, table.fill
		return TableShift
	}
	return -1
}

func (rw *rewriter) body(dst []byte, fidx uint32, fn []byte) ([]byte, error) {
	info := rw.info
	typ := info.Types[info.FuncTypes[fidx]]
	nLocals := info.Locals[fidx-info.ImportedFuncs]
	r := &reader{b: fn}
	groups := r.u32()
	groupsEnd := r.off
	for i := uint32(0); i < groups && r.err == nil; i++ {
		r.u32()
		r.byte()
	}
	if r.err != nil {
		return nil, fmt.Errorf("locals: %w", r.err)
	}
	code := fn[r.off:]
	a := rw.analyses[fidx-info.ImportedFuncs]
	chunks, err := rw.weigh(code, rw.callWeight)
	if err != nil {
		return nil, err
	}
	// Locals: the original groups, plus an i32 scratch local for the size
	// of bulk instructions.
	scratch := uint32(nLocals)
	if a.bulk {
		if nLocals >= 1<<32-1 {
			return nil, errors.New("too many locals")
		}
		dst = AppendU32(dst, groups+1)
		dst = append(dst, fn[groupsEnd:r.off]...)
		dst = append(dst, 1, I32)
	} else {
		dst = append(dst, fn[:r.off]...)
	}

	// Only a function that calls another can recurse; leaf functions skip
	// the entry check and the stack charge.
	var weight int32
	wrap := a.calls && rw.cfg.StackBytes > 0
	// A light leaf's entry chunk is charged by its callers.
	if rw.leafWeight[fidx-info.ImportedFuncs] == 0 {
		dst = rw.check(dst, chunks[0])
	}
	if wrap {
		slots := nLocals + uint64(a.maxHeight) + 8 // + the metering code's own operands
		w := uint64(FrameOverhead) + 8*slots
		w = max(w, uint64(rw.cfg.MinFrame))
		w = min(w, uint64(rw.cfg.StackBytes)+1) // such a frame always fails
		weight = int32(w)
		dst = rw.charge(dst, weight)
		dst = append(dst, 0x02) // block with the function's results
		switch res := typ.Results; len(res) {
		case 0:
			dst = append(dst, 0x40)
		case 1:
			dst = append(dst, res[0])
		default:
			dst = AppendS64(dst, int64(rw.wrapType[info.FuncTypes[fidx]]))
		}
	}

	cr := &reader{b: code}
	depth := 1 // the function's own block
	for !cr.done() {
		start := cr.off
		if c, ok := chunks[start]; ok && start > 0 {
			dst = rw.check(dst, c)
		}
		op := cr.byte()
		switch op {
		case 0x02, 0x03, 0x04: // block, loop, if
			bt := readBlockType(cr)
			if _, _, err := info.blockArity(bt); err != nil && cr.err == nil {
				return nil, err
			}
			depth++
			dst = append(dst, code[start:cr.off]...)
			continue
		case 0x0b: // end
			depth--
			if depth == 0 {
				if !cr.done() {
					return nil, errors.New("code after the function's end")
				}
				if wrap {
					dst = append(dst, 0x0b)
					dst = rw.refund(dst, weight)
				}
				return append(dst, 0x0b), nil
			}
		case 0x0f: // return
			if wrap {
				dst = rw.refund(dst, weight)
			}
		case 0x10, 0x12: // call, return_call
			idx := cr.u32()
			if idx >= info.Funcs() && cr.err == nil {
				return nil, fmt.Errorf("call of function %d out of range", idx)
			}
			if op == 0x12 && wrap {
				dst = rw.refund(dst, weight)
			}
			dst = append(dst, op)
			dst = AppendU32(dst, rw.fn(idx))
			continue
		case 0xd2: // ref.func
			idx := cr.u32()
			if idx >= info.Funcs() && cr.err == nil {
				return nil, fmt.Errorf("ref.func %d out of range", idx)
			}
			dst = append(dst, op)
			dst = AppendU32(dst, rw.fn(idx))
			continue
		case 0x11, 0x13: // call_indirect, return_call_indirect
			if t := cr.u32(); t >= uint32(len(info.Types)) && cr.err == nil {
				return nil, fmt.Errorf("call_indirect type %d out of range", t)
			}
			cr.u32()
			if op == 0x13 && wrap {
				dst = rw.refund(dst, weight)
			}
			dst = append(dst, code[start:cr.off]...)
			continue
		case 0x20, 0x21, 0x22: // local.*
			if idx := cr.u32(); uint64(idx) >= nLocals && cr.err == nil {
				return nil, fmt.Errorf("local %d out of range (%d locals)", idx, nLocals)
			}
			dst = append(dst, code[start:cr.off]...)
			continue
		case 0x23, 0x24: // global.*
			if idx := cr.u32(); idx >= info.Globals && cr.err == nil {
				return nil, fmt.Errorf("global %d out of range (%d globals)", idx, info.Globals)
			}
			dst = append(dst, code[start:cr.off]...)
			continue
		case 0x06, 0x07, 0x08, 0x09, 0x18, 0x19, 0x1f: // exception handling
			return nil, fmt.Errorf("unsupported opcode 0x%02x", op)
		case 0x40: // memory.grow
			dst = rw.bulk(dst, scratch, growPages, -1)
		case 0xfc:
			sub := cr.u32()
			cr.off = start + 1
			if shift := bulkShift(sub); shift >= 0 {
				grow := int64(-1)
				if sub == 15 {
					sr := &reader{b: code, off: cr.off}
					sr.u32()
					grow = int64(sr.u32())
				}
				dst = rw.bulk(dst, scratch, shift, grow)
			}
		}
		if err := skipImmediates(cr, op); err != nil {
			return nil, err
		}
		if cr.err != nil {
			break
		}
		dst = append(dst, code[start:cr.off]...)
	}
	if cr.err != nil {
		return nil, cr.err
	}
	return nil, errors.New("function body does not end")
}

// readBlockType reads a block type as the s33 of the binary format: -64 for
// empty, a negative value type, or a type index.
func readBlockType(r *reader) int64 {
	c := r.byte()
	switch {
	case r.err != nil:
		return -64
	case c == 0x63 || c == 0x64: // (ref null? ht): a value type
		r.skipLEB(5)
		return -1
	case c&0x80 == 0:
		return int64(c) - int64(c&0x40)<<1 // sign-extend 7 bits
	}
	v := int64(c & 0x7f)
	shift := 7
	for i := 0; i < 4; i++ {
		c = r.byte()
		v |= int64(c&0x7f) << shift
		shift += 7
		if c&0x80 == 0 {
			if c&0x40 != 0 {
				v -= 1 << shift
			}
			return v
		}
	}
	r.fail(fmt.Errorf("block type too long at offset %d", r.off))
	return -64
}

// analysis is what the rewriter needs to know of a body before emitting it.
type analysis struct {
	calls     bool // calls another function (so it can recurse)
	bulk      bool // has an instruction charged by size
	maxHeight int  // the operand stack's greatest height
}

type ctlFrame struct {
	base, params, results int
}

// analyze walks a body once, tracking the operand stack's height (not its
// types: the module is validated already) to bound the function's frame.
func (rw *rewriter) analyze(code []byte, results uint64) (analysis, error) {
	info := rw.info
	var a analysis
	h := 0
	ctl := []ctlFrame{{base: 0, results: int(results)}}
	pop := func(n int) {
		h -= n
		if b := ctl[len(ctl)-1].base; h < b {
			h = b // unreachable code: the stack is polymorphic
		}
	}
	push := func(n int) {
		h += n
		a.maxHeight = max(a.maxHeight, h)
	}
	unreachable := func() { h = ctl[len(ctl)-1].base }
	funcArity := func(idx uint32) (int, int, error) {
		if idx >= info.Funcs() {
			return 0, 0, fmt.Errorf("call of function %d out of range", idx)
		}
		t := info.Types[info.FuncTypes[idx]]
		return len(t.Params), len(t.Results), nil
	}
	r := &reader{b: code}
	for !r.done() {
		op := r.byte()
		switch {
		case op == 0x02 || op == 0x03 || op == 0x04:
			bt := readBlockType(r)
			p, res, err := info.blockArity(bt)
			if err != nil {
				return a, err
			}
			if op == 0x04 {
				pop(1)
			}
			pop(p)
			ctl = append(ctl, ctlFrame{base: h, params: p, results: res})
			push(p)
			continue
		case op == 0x05: // else
			f := ctl[len(ctl)-1]
			h = f.base + f.params
			continue
		case op == 0x0b:
			f := ctl[len(ctl)-1]
			h = f.base
			push(f.results)
			ctl = ctl[:len(ctl)-1]
			if len(ctl) == 0 {
				if !r.done() {
					return a, errors.New("code after the function's end")
				}
				return a, nil
			}
			continue
		case op == 0x00 || op == 0x0c || op == 0x0e || op == 0x0f:
			if err := skipImmediates(r, op); err != nil {
				return a, err
			}
			unreachable()
			continue
		case op == 0x0d: // br_if
			r.u32()
			pop(1)
			continue
		case op == 0x10 || op == 0x12:
			a.calls = true
			p, res, err := funcArity(r.u32())
			if r.err != nil {
				return a, r.err
			}
			if err != nil {
				return a, err
			}
			pop(p)
			if op == 0x12 {
				unreachable()
			} else {
				push(res)
			}
			continue
		case op == 0x11 || op == 0x13:
			a.calls = true
			t := r.u32()
			r.u32()
			if r.err != nil {
				return a, r.err
			}
			if t >= uint32(len(info.Types)) {
				return a, fmt.Errorf("call_indirect type %d out of range", t)
			}
			pop(1 + len(info.Types[t].Params))
			if op == 0x13 {
				unreachable()
			} else {
				push(len(info.Types[t].Results))
			}
			continue
		case op == 0xfc:
			start := r.off
			sub := r.u32()
			r.off = start
			if bulkShift(sub) >= 0 {
				a.bulk = true
			}
			p, q := fcEffect(sub)
			pop(p)
			push(q)
		case op == 0x40:
			a.bulk = true
			pop(1)
			push(1)
		default:
			p, q := effect(op)
			pop(p)
			push(q)
		}
		if err := skipImmediates(r, op); err != nil {
			return a, err
		}
	}
	if r.err != nil {
		return a, r.err
	}
	return a, errors.New("function body does not end")
}

// effect returns how many operands op pops and pushes. SIMD and atomic
// instructions count as pushing one (an over-estimate, never an under-).
func effect(op byte) (pop, push int) {
	switch {
	case op == 0x01: // nop
		return 0, 0
	case op == 0x1a: // drop
		return 1, 0
	case op == 0x1b || op == 0x1c: // select
		return 3, 1
	case op == 0x20 || op == 0x23: // local.get, global.get
		return 0, 1
	case op == 0x21 || op == 0x24: // local.set, global.set
		return 1, 0
	case op == 0x22: // local.tee
		return 1, 1
	case op == 0x25: // table.get
		return 1, 1
	case op == 0x26: // table.set
		return 2, 0
	case op >= 0x28 && op <= 0x35: // loads
		return 1, 1
	case op >= 0x36 && op <= 0x3e: // stores
		return 2, 0
	case op == 0x3f: // memory.size
		return 0, 1
	case op == 0x40: // memory.grow
		return 1, 1
	case op >= 0x41 && op <= 0x44: // consts
		return 0, 1
	case op == 0x45 || op == 0x50 || (op >= 0x67 && op <= 0x69) || (op >= 0x79 && op <= 0x7b) ||
		(op >= 0x8b && op <= 0x91) || (op >= 0x99 && op <= 0x9f) || (op >= 0xa7 && op <= 0xc4):
		return 1, 1 // unary and conversions
	case op >= 0x46 && op <= 0xa6:
		return 2, 1 // comparisons and binary
	case op == 0xd0 || op == 0xd2: // ref.null, ref.func
		return 0, 1
	case op == 0xd1: // ref.is_null
		return 1, 1
	}
	return 0, 1
}

func fcEffect(sub uint32) (pop, push int) {
	switch {
	case sub <= 7:
		return 1, 1
	case sub == 9 || sub == 13: // data.drop, elem.drop
		return 0, 0
	case sub == 15: // table.grow
		return 2, 1
	case sub == 16: // table.size
		return 0, 1
	}
	return 3, 0
}

// names rewrites the function and local name maps of the "name" section and
// drops its other subsections; debug sections, whose code offsets just moved,
// are dropped.
func (rw *rewriter) names(m *Module) {
	kept := m.Sections[:0]
	for _, s := range m.Sections {
		if s.ID == SecCustom && (strings.HasPrefix(s.Name, ".debug_") || s.Name == "sourceMappingURL") {
			continue
		}
		if s.ID == SecCustom && s.Name == "name" {
			s.Payload = rw.nameSection(s.Payload)
			if s.Payload == nil {
				continue
			}
		}
		kept = append(kept, s)
	}
	m.Sections = kept
}

func (rw *rewriter) nameSection(p []byte) []byte {
	r := &reader{b: p}
	var out []byte
	for !r.done() {
		id := r.byte()
		sub := r.bytes(int(r.u32()))
		if r.err != nil {
			return nil
		}
		var np []byte
		sr := &reader{b: sub}
		switch id {
		case 1: // function names: namemap
			n := sr.u32()
			np = AppendU32(nil, n)
			for i := uint32(0); i < n && sr.err == nil; i++ {
				np = AppendU32(np, rw.fn(sr.u32()))
				np = AppendName(np, sr.name())
			}
		case 2: // local names: indirect namemap
			n := sr.u32()
			np = AppendU32(nil, n)
			for i := uint32(0); i < n && sr.err == nil; i++ {
				np = AppendU32(np, rw.fn(sr.u32()))
				k := sr.u32()
				np = AppendU32(np, k)
				for j := uint32(0); j < k && sr.err == nil; j++ {
					np = AppendU32(np, sr.u32())
					np = AppendName(np, sr.name())
				}
			}
		default:
			continue
		}
		if sr.err != nil {
			return nil
		}
		out = append(out, id)
		out = AppendU32(out, uint32(len(np)))
		out = append(out, np...)
	}
	return out
}
