package wasmbin

import (
	"fmt"
	"strings"
)

// Metering describes how AddMetering connects a module to the host's clock.
type Metering struct {
	// Module and Name name the host function the guest calls when its fuel
	// runs out: () -> i32, returning the fuel to continue with. The host
	// checks the call's deadline there and traps (panics) when it is past.
	Module, Name string
	// BulkCost is the fuel charged by a bulk memory or table instruction
	// (memory.copy, memory.fill, …), which can touch megabytes at once.
	BulkCost int32
}

// AddMetering makes the guest check in with the host regularly: a mutable
// i32 global counts fuel down at every function entry (of functions that
// call others), at the head of every loop and at every bulk memory
// instruction; when it reaches zero the guest calls the imported check
// function, which may trap. Those are the only places where a guest can spend
// unbounded time (straight-line code is finite and recursion is bounded by
// the stack), so a runaway guest always reaches a check, and the Go
// scheduler gets a safe point there: a guest spinning in a loop can neither
// outlive its deadline nor stall a stop-the-world GC.
//
// The added import is the last function import, so every defined function's
// index moves up by one; AddMetering renumbers calls, ref.func, exports, the
// start function, element segments and the name section accordingly.
//
// NB: wazero's WithCloseOnContextDone solves the same problem by leaving the
// native code at every loop back-edge and starting a goroutine per call;
// measured on a Go guest it made a policy call 8× slower (see
// docs/benchmarks-wasm.md). A watchdog goroutine that flips a guest global
// would be cheaper still but deadlocks: a stop-the-world GC waits for the
// spinning guest while the watchdog that would stop it is itself stopped.
func AddMetering(m *Module, cfg Metering) error {
	imports, err := m.Imports()
	if err != nil {
		return err
	}
	var importedFuncs, importedGlobals uint32
	for _, imp := range imports {
		switch imp.Kind {
		case KindFunc:
			importedFuncs++
		case KindGlobal:
			importedGlobals++
		}
	}
	rw := &rewriter{shiftFrom: importedFuncs, bulkCost: cfg.BulkCost}

	// Type for the check function: () -> i32.
	typeIdx, err := addType(m, nil, []byte{I32})
	if err != nil {
		return err
	}

	// Import the check function after the existing function imports.
	var ip []byte
	if s := m.Section(SecImport); s != nil {
		r := &reader{b: s.Payload}
		n := r.u32()
		if r.err != nil {
			return fmt.Errorf("import section: %w", r.err)
		}
		ip = AppendU32(nil, n+1)
		ip = append(ip, s.Payload[r.off:]...)
	} else {
		ip = AppendU32(nil, 1)
	}
	ip = AppendName(ip, cfg.Module)
	ip = AppendName(ip, cfg.Name)
	ip = append(ip, KindFunc)
	ip = AppendU32(ip, typeIdx)
	m.setSection(SecImport, ip)
	rw.checkFunc = importedFuncs

	// The fuel global, appended after every other global. Global initialisers
	// may hold ref.func, so they are rewritten too.
	var definedGlobals uint32
	g := []byte{}
	if s := m.Section(SecGlobal); s != nil {
		r := &reader{b: s.Payload}
		definedGlobals = r.u32()
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
	rw.fuelGlobal = importedGlobals + definedGlobals
	g = append(g, I32, 0x01, 0x41, 0x00, 0x0b) // mut i32 = 0: the first check comes at once
	m.setSection(SecGlobal, append(AppendU32(nil, definedGlobals+1), g...))

	if err := rw.exports(m); err != nil {
		return err
	}
	if s := m.Section(SecStart); s != nil {
		r := &reader{b: s.Payload}
		idx := r.u32()
		if r.err != nil {
			return fmt.Errorf("start section: %w", r.err)
		}
		s.Payload = AppendU32(nil, rw.fn(idx))
	}
	if err := rw.elements(m); err != nil {
		return err
	}
	if err := rw.code(m); err != nil {
		return err
	}
	rw.names(m)
	return nil
}

type rewriter struct {
	shiftFrom  uint32 // function indices >= shiftFrom move up by one
	checkFunc  uint32
	fuelGlobal uint32
	bulkCost   int32
}

func (rw *rewriter) fn(idx uint32) uint32 {
	if idx >= rw.shiftFrom {
		return idx + 1
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

func (rw *rewriter) exports(m *Module) error {
	s := m.Section(SecExport)
	if s == nil {
		return nil
	}
	exps, err := m.Exports()
	if err != nil {
		return err
	}
	p := AppendU32(nil, uint32(len(exps)))
	for _, e := range exps {
		p = AppendName(p, e.Name)
		p = append(p, e.Kind)
		if e.Kind == KindFunc {
			e.Index = rw.fn(e.Index)
		}
		p = AppendU32(p, e.Index)
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
				p = AppendU32(p, rw.fn(r.u32()))
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

// expr copies a constant expression up to and including its end.
func (rw *rewriter) expr(dst []byte, r *reader) ([]byte, error) {
	for {
		op := r.byte()
		if r.err != nil {
			return dst, r.err
		}
		var err error
		if dst, err = rw.instr(dst, r, op, false); err != nil {
			return dst, err
		}
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
		body, err = rw.body(body[:0], fn)
		if err != nil {
			return fmt.Errorf("function body %d: %w", i, err)
		}
		out = AppendU32(out, uint32(len(body)))
		out = append(out, body...)
	}
	s.Payload = out
	return nil
}

// check emits: fuel -= cost; if fuel <= 0 { fuel = check() }.
func (rw *rewriter) check(dst []byte, cost int32) []byte {
	dst = append(dst, 0x23)
	dst = AppendU32(dst, rw.fuelGlobal)
	dst = append(dst, I32Const(cost)...)
	dst = append(dst, 0x6b, 0x24) // i32.sub, global.set
	dst = AppendU32(dst, rw.fuelGlobal)
	dst = append(dst, 0x23)
	dst = AppendU32(dst, rw.fuelGlobal)
	dst = append(dst, 0x41, 0x00, 0x4c, 0x04, 0x40, 0x10) // i32.const 0, i32.le_s, if, call
	dst = AppendU32(dst, rw.checkFunc)
	dst = append(dst, 0x24)
	dst = AppendU32(dst, rw.fuelGlobal)
	return append(dst, 0x0b)
}

func (rw *rewriter) body(dst, fn []byte) ([]byte, error) {
	r := &reader{b: fn}
	groups := r.u32()
	for i := uint32(0); i < groups; i++ {
		r.u32()
		r.byte()
	}
	if r.err != nil {
		return nil, fmt.Errorf("locals: %w", r.err)
	}
	dst = append(dst, fn[:r.off]...)
	codeStart := r.off
	// Only a function that calls another can recurse; leaf functions skip
	// the entry check.
	calls, err := hasCalls(fn[codeStart:])
	if err != nil {
		return nil, err
	}
	if calls {
		dst = rw.check(dst, 1)
	}
	for !r.done() {
		op := r.byte()
		if dst, err = rw.instr(dst, r, op, true); err != nil {
			return nil, err
		}
		if r.err != nil {
			return nil, r.err
		}
	}
	return dst, r.err
}

func hasCalls(code []byte) (bool, error) {
	r := &reader{b: code}
	for !r.done() {
		op := r.byte()
		switch op {
		case 0x10, 0x11, 0x12, 0x13:
			return true, nil
		}
		if err := skipImmediates(r, op); err != nil {
			return false, err
		}
	}
	return false, r.err
}

// instr copies one instruction (op already read), renumbering function
// indices and, in code, adding fuel checks.
func (rw *rewriter) instr(dst []byte, r *reader, op byte, inCode bool) ([]byte, error) {
	switch op {
	case 0x10, 0x12, 0xd2: // call, return_call, ref.func
		dst = append(dst, op)
		return AppendU32(dst, rw.fn(r.u32())), r.err
	case 0xfc:
		start := r.off
		sub := r.u32()
		if inCode && (sub == 8 || sub == 10 || sub == 11 || sub == 12 || sub == 14 || sub == 17) {
			dst = rw.check(dst, rw.bulkCost)
		}
		r.off = start
	}
	start := r.off - 1
	if err := skipImmediates(r, op); err != nil {
		return dst, err
	}
	dst = append(dst, r.b[start:r.off]...)
	if op == 0x03 && inCode {
		dst = rw.check(dst, 1)
	}
	return dst, r.err
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
			for i := uint32(0); i < n; i++ {
				np = AppendU32(np, rw.fn(sr.u32()))
				np = AppendName(np, sr.name())
			}
		case 2: // local names: indirect namemap
			n := sr.u32()
			np = AppendU32(nil, n)
			for i := uint32(0); i < n; i++ {
				np = AppendU32(np, rw.fn(sr.u32()))
				k := sr.u32()
				np = AppendU32(np, k)
				for j := uint32(0); j < k; j++ {
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
