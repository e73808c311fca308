package wasmbin

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// gen writes random valid modules for the differential test of the
// rewriter. No maintained generator is usable from Go here (wasm-smith is
// Rust, binaryen's translate-to-fuzz is an external binary), so this one
// builds typed, stack-correct code from a small grammar: i32/i64
// arithmetic, loads and stores, blocks, loops with counters, if/else,
// br/br_if/br_table, return, select, direct, indirect and recursive calls,
// globals, memory.grow/size/fill/copy/init and table.size/grow/fill.
// Every loop is counted and calls go only to later functions (plus one
// bounded self-recursive one), so every run ends.
type gen struct {
	r     *rand.Rand
	b     *Builder
	nfunc int // generated functions; the last one is the recursive one
	self  int // index of the function being generated
	depth int
	loops int // nesting of counted loops (their counters are locals 2..)
	globs []uint32
}

const (
	genParams   = 2 // (i32, i32) -> i32
	genCounters = 4 // i32 locals 2..5 are loop counters
	genScratch  = 6 // i32 locals 6..7 are free
	genI64      = 8 // i64 local 8
	genLocals   = 9
)

func (g *gen) i32() []byte {
	g.depth++
	defer func() { g.depth-- }()
	n := 14
	if g.depth > 4 {
		n = 3 // leaves only
	}
	switch g.r.IntN(n) {
	case 0:
		return I32Const(int32(g.r.Uint32()))
	case 1:
		return Code([]byte{0x20}, AppendU32(nil, uint32(g.pick(0, 1, genScratch, genScratch+1))))
	case 2:
		return Code([]byte{0x23}, AppendU32(nil, g.globs[g.r.IntN(len(g.globs))]))
	case 3, 4:
		ops := []byte{0x6a, 0x6b, 0x6c, 0x71, 0x72, 0x73, 0x74, 0x76, 0x77, 0x46, 0x49, 0x4d, 0x6e, 0x70}
		return Code(g.i32(), g.i32(), []byte{ops[g.r.IntN(len(ops))]}) // incl. div_u/rem_u, which may trap
	case 5:
		return Code(g.addr(), []byte{0x28, 0x02, 0x00}) // i32.load
	case 6:
		// Calls only go to later functions, so they end.
		if g.self+1 < g.nfunc-1 {
			return Code(g.i32(), g.i32(), []byte{0x10}, AppendU32(nil, uint32(g.self+1+g.r.IntN(g.nfunc-2-g.self))))
		}
		return g.recurse()
	case 7:
		if g.self+1 < g.nfunc-1 {
			// call_indirect through the table, which holds every function
			// at its own index.
			return Code(g.i32(), g.i32(), I32Const(int32(g.self+1+g.r.IntN(g.nfunc-2-g.self))),
				[]byte{0x11, 0x00, 0x00})
		}
		return g.recurse()
	case 8:
		return Code([]byte{0x02, I32}, g.stmts(), g.i32(), g.i32(), []byte{0x0d, 0x00, 0x1a}, g.i32(), []byte{0x0b}) // block: br_if with a value
	case 9:
		return Code(g.i32(), []byte{0x04, I32}, g.stmts(), g.i32(), []byte{0x05}, g.i32(), []byte{0x0b})
	case 10:
		return Code(g.i32(), g.i32(), g.i32(), []byte{0x1b}) // select
	case 11:
		// i64 arithmetic, wrapped.
		return Code([]byte{0x20, genI64}, g.i32(), []byte{0xad}, []byte{[]byte{0x7c, 0x7e, 0x85, 0x86}[g.r.IntN(4)]}, []byte{0xa7})
	case 12:
		if g.loops < genCounters {
			return g.loop(true)
		}
		return I32Const(7)
	default:
		return g.recurse()
	}
}

func (g *gen) pick(xs ...int) int { return xs[g.r.IntN(len(xs))] }

// recurse calls the last function, f(n, x) = n ? f(n-1, 3x+1) : x, with n
// below 32.
func (g *gen) recurse() []byte {
	if g.self == g.nfunc-1 {
		return I32Const(11)
	}
	return Code(g.i32(), I32Const(31), []byte{0x71}, g.i32(), []byte{0x10}, AppendU32(nil, uint32(g.nfunc-1)))
}

// addr is an address in the first page with room for 4 bytes.
func (g *gen) addr() []byte { return Code(g.i32(), I32Const(0xfffc), []byte{0x71}) }

// small is a length below 32 KiB.
func (g *gen) small() []byte { return Code(g.i32(), I32Const(0x7fff), []byte{0x71}) }

// loop is a counted loop of at most 3 iterations; with result it yields an
// i32.
func (g *gen) loop(result bool) []byte {
	c := byte(2 + g.loops)
	g.loops++
	defer func() { g.loops-- }()
	bt := byte(0x40)
	if result {
		bt = I32
	}
	body := Code(I32Const(int32(1+g.r.IntN(3))), []byte{0x21, c, 0x03, bt}, g.stmts(),
		[]byte{0x20, c}, I32Const(1), []byte{0x6b, 0x22, c, 0x0d, 0x00})
	if result {
		body = append(body, g.i32()...)
	}
	return append(body, 0x0b)
}

func (g *gen) stmts() []byte {
	var out []byte
	n := g.r.IntN(4)
	if g.depth > 4 {
		n = 0
	}
	for i := 0; i < n; i++ {
		out = append(out, g.stmt()...)
	}
	return out
}

func (g *gen) stmt() []byte {
	g.depth++
	defer func() { g.depth-- }()
	switch g.r.IntN(13) {
	case 0:
		return Code(g.i32(), []byte{0x21, byte(g.pick(0, 1, genScratch, genScratch+1))})
	case 1:
		return Code(g.i32(), []byte{0x24}, AppendU32(nil, g.globs[g.r.IntN(len(g.globs))]))
	case 2:
		return Code(g.addr(), g.i32(), []byte{0x36, 0x02, 0x00}) // i32.store
	case 3:
		return Code(g.small(), g.i32(), g.small(), []byte{0xfc, 11, 0x00}) // memory.fill
	case 4:
		return Code(g.small(), g.small(), g.small(), []byte{0xfc, 10, 0x00, 0x00}) // memory.copy
	case 5:
		// memory.init from the passive segment 1 (16 bytes): may trap.
		return Code(g.small(), g.i32(), I32Const(15), []byte{0x71}, I32Const(int32(g.r.IntN(3))), []byte{0xfc, 8, 0x01, 0x00})
	case 6:
		if g.loops < genCounters {
			return g.loop(false)
		}
		return nil
	case 7:
		return Code(g.i32(), []byte{0x04, 0x40}, g.stmts(), []byte{0x05}, g.stmts(), []byte{0x0b})
	case 8:
		// br_table out of one of three nested blocks.
		return Code([]byte{0x02, 0x40, 0x02, 0x40, 0x02, 0x40}, g.i32(), []byte{0x0e, 0x02, 0x00, 0x01, 0x02},
			[]byte{0x0b}, g.stmts(), []byte{0x0b}, g.stmts(), []byte{0x0b})
	case 9:
		return Code(g.i32(), []byte{0x04, 0x40}, g.i32(), []byte{0x0f, 0x0b}) // if c { return x }
	case 10:
		return Code(g.i32(), []byte{0x1a}) // drop
	case 11:
		// memory.grow by 0 or 1 page (the maximum is 3) and memory.size.
		return Code(I32Const(int32(g.r.IntN(2))), []byte{0x40, 0x00, 0x3f, 0x00, 0x6a, 0x1a})
	default:
		// table.size, and table.grow/fill by a few null entries.
		return Code([]byte{0xd0, 0x70}, I32Const(int32(g.r.IntN(3))), []byte{0xfc, 15, 0x00, 0xfc, 16, 0x00, 0x6a, 0x1a},
			I32Const(int32(g.nfunc)), []byte{0xd0, 0x70}, I32Const(int32(g.r.IntN(2))), []byte{0xfc, 17, 0x00})
	}
}

// genModule returns a random valid module exporting f0..f(n-1) and its
// memory.
func genModule(seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	g := &gen{r: r, b: &Builder{}, nfunc: 2 + r.IntN(5)}
	g.b.Memory(1, 3)
	for i := 0; i < 1+r.IntN(3); i++ {
		g.globs = append(g.globs, g.b.GlobalI32(int32(r.Uint32())))
	}
	locals := []byte{2, genLocals - genParams - 1, I32, 1, I64}
	params := []byte{I32, I32}
	for i := 0; i < g.nfunc; i++ {
		g.self = i
		var code []byte
		if i == g.nfunc-1 {
			// f(n, x) = n ? f(n-1, 3x+1) : x
			code = Code([]byte{0x20, 0x00, 0x04, I32, 0x20, 0x00}, I32Const(1), []byte{0x6b, 0x20, 0x01}, I32Const(3),
				[]byte{0x6c}, I32Const(1), []byte{0x6a, 0x10}, AppendU32(nil, uint32(i)), []byte{0x05, 0x20, 0x01, 0x0b, 0x0b})
		} else {
			code = Code(g.stmts(), g.stmts(), g.i32(), []byte{0x0b})
		}
		idx := g.b.Func(params, []byte{I32}, locals, code)
		g.b.Export(fmt.Sprintf("f%d", idx), KindFunc, idx)
	}
	g.b.Export("memory", KindMemory, 0)
	g.b.Data(0, []byte("differential test data"))
	bin := g.b.Bytes()
	m, err := Parse(bin)
	if err != nil {
		panic(err)
	}
	// A table with every function at its own index (plus room), and a
	// passive data segment for memory.init.
	tab := []byte{1, 0x70, 0x00}
	m.setSection(SecTable, AppendU32(tab, uint32(g.nfunc+4)))
	elem := []byte{1, 0x00, 0x41, 0x00, 0x0b}
	elem = AppendU32(elem, uint32(g.nfunc))
	for i := 0; i < g.nfunc; i++ {
		elem = AppendU32(elem, uint32(i))
	}
	m.setSection(SecElement, elem)
	d := m.Section(SecData)
	d.Payload[0] = 2
	d.Payload = append(d.Payload, 0x01, 16)
	d.Payload = append(d.Payload, []byte("passive segment!")...)
	m.setSection(SecDataCount, []byte{2})
	return m.Encode()
}

// outcome is what a run of every export computed: results (or traps) and
// the final memory.
type outcome struct {
	results []string
	memory  []byte
}

// runAll calls every export; with stackBytes > 0 the module exports the
// stack budget as "__stack", which must be back to stackBytes after every
// call that returned (a trap leaves it charged: the host discards such an
// instance, here it is reset).
func runAll(t *testing.T, rt wazero.Runtime, bin []byte, stackBytes int32) outcome {
	t.Helper()
	ctx := context.Background()
	mod, err := rt.InstantiateWithConfig(ctx, bin, wazero.NewModuleConfig().WithName(""))
	if err != nil {
		t.Fatalf("instantiate: %v", err)
	}
	defer mod.Close(ctx)
	var stack api.MutableGlobal
	if stackBytes > 0 {
		stack = mod.ExportedGlobal("__stack").(api.MutableGlobal)
	}
	var o outcome
	for i := 0; ; i++ {
		f := mod.ExportedFunction(fmt.Sprintf("f%d", i))
		if f == nil {
			break
		}
		for _, args := range [][2]uint64{{0, 0}, {1, 7}, {5, 0xffffffff}, {31, 12345}} {
			res, err := f.Call(ctx, args[0], args[1])
			if stack != nil {
				if got := int32(stack.Get()); err == nil && got != stackBytes {
					t.Fatalf("f%d%v: stack budget %d after the call, want %d", i, args, got, stackBytes)
				}
				stack.Set(uint64(uint32(stackBytes)))
			}
			if err != nil {
				o.results = append(o.results, "trap")
				continue
			}
			o.results = append(o.results, fmt.Sprint(int32(res[0])))
		}
	}
	mem := mod.ExportedMemory("memory")
	b, _ := mem.Read(0, mem.Size())
	o.memory = bytes.Clone(b)
	return o
}

// TestDifferentialMetering: for many generated valid modules, the metered
// module validates and computes what the original computes (results,
// traps and memory), the original run unmetered on wazero's interpreter,
// the metered one on its compiler with a small fuel quantum, so that
// check-ins happen everywhere.
func TestDifferentialMetering(t *testing.T) {
	ctx := context.Background()
	n := 300
	if testing.Short() {
		n = 50
	}
	interp := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer interp.Close(ctx)
	comp := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigCompiler())
	defer comp.Close(ctx)
	checks := 0
	_, err := comp.NewHostModuleBuilder("m").
		NewFunctionBuilder().WithGoFunction(api.GoFunc(func(_ context.Context, st []uint64) { checks++; st[0] = 5 }), nil, []api.ValueType{api.ValueTypeI32}).Export("fuel").
		NewFunctionBuilder().WithGoFunction(api.GoFunc(func(_ context.Context, st []uint64) { checks++; st[0] = 5 }), []api.ValueType{api.ValueTypeI32}, []api.ValueType{api.ValueTypeI32}).Export("bulk").
		NewFunctionBuilder().WithGoFunction(api.GoFunc(func(_ context.Context, st []uint64) {
		if uint32(st[0]) == LimitStack {
			panic("stack limit")
		}
	}), []api.ValueType{api.ValueTypeI32}, nil).Export("limit").
		Instantiate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Metering{Module: "m", Fuel: "fuel", Bulk: "bulk", Limit: "limit", BulkCost: 3, StackBytes: 1 << 24, MinFrame: 16, TableElements: 1 << 16}
	for seed := uint64(0); seed < uint64(n); seed++ {
		bin := genModule(seed)
		if _, err := interp.CompileModule(ctx, bin); err != nil {
			t.Fatalf("seed %d: the generator made an invalid module: %v", seed, err)
		}
		want := runAll(t, interp, bin, 0)
		m, err := Parse(bin)
		if err != nil {
			t.Fatal(err)
		}
		info, err := Inspect(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := AddMetering(m, cfg); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		exp := m.Section(SecExport)
		exp.Payload[0]++ // fewer than 127 exports
		exp.Payload = AppendName(exp.Payload, "__stack")
		exp.Payload = append(exp.Payload, KindGlobal)
		exp.Payload = AppendU32(exp.Payload, info.Globals+1)
		metered := m.Encode()
		if _, err := comp.CompileModule(ctx, metered); err != nil {
			t.Fatalf("seed %d: the metered module is invalid: %v", seed, err)
		}
		got := runAll(t, comp, metered, cfg.StackBytes)
		if fmt.Sprint(got.results) != fmt.Sprint(want.results) {
			t.Fatalf("seed %d: results %v, want %v", seed, got.results, want.results)
		}
		if !bytes.Equal(got.memory, want.memory) {
			t.Fatalf("seed %d: memory differs", seed)
		}
	}
	if checks == 0 {
		t.Error("no check-in happened")
	}
	t.Logf("%d modules, %d check-ins", n, checks)
}
