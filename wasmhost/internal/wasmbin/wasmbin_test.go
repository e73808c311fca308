package wasmbin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

func TestLEB(t *testing.T) {
	for _, v := range []int64{0, 1, -1, 63, 64, -64, -65, 1 << 40, -1 << 40} {
		r := &reader{b: AppendS64(nil, v)}
		r.skipLEB(10)
		if r.err != nil || r.off != len(r.b) {
			t.Errorf("%d: %v", v, r.err)
		}
	}
	for _, v := range []uint32{0, 127, 128, 1 << 31, 1<<32 - 1} {
		r := &reader{b: AppendU32(nil, v)}
		if got := r.u32(); got != v || r.err != nil {
			t.Errorf("u32 %d: got %d %v", v, got, r.err)
		}
	}
}

// meteredModule builds a module that exercises every place AddMetering
// renumbers: an import, a start function, exports, an element segment used
// by call_indirect, ref.func in a global initialiser, and a name section.
func meteredModule() []byte {
	b := &Builder{}
	b.ImportFunc("env", "seven", nil, []byte{I32}) // func 0
	b.Memory(1, -1)
	g := b.GlobalI32(0) // set by start
	// func 1: start: global g = 1
	start := b.Func(nil, nil, nil, Code(I32Const(1), []byte{0x24}, AppendU32(nil, g), []byte{0x0b}))
	// func 2: double(x) = x*2 (leaf, with a loop that runs once)
	double := b.Func([]byte{I32}, []byte{I32}, nil, Code(
		[]byte{0x03, 0x40, 0x0b}, // loop end
		[]byte{0x20, 0x00}, I32Const(2), []byte{0x6c, 0x0b}))
	// func 3: run() = table[0](seven()) + g + loop sum 1..100
	run := b.Func(nil, []byte{I32}, []byte{1, 2, I32}, Code(
		[]byte{0x10}, AppendU32(nil, 0), // call seven
		I32Const(0), []byte{0x11}, AppendU32(nil, b.Type([]byte{I32}, []byte{I32})), []byte{0x00}, // call_indirect (i32->i32), table 0
		[]byte{0x23}, AppendU32(nil, g), []byte{0x6a}, // + g
		// local0 = 100; loop { local1 += local0; local0--; br_if local0 }
		I32Const(100), []byte{0x21, 0x00},
		[]byte{0x03, 0x40},
		[]byte{0x20, 0x01, 0x20, 0x00, 0x6a, 0x21, 0x01},
		[]byte{0x20, 0x00}, I32Const(1), []byte{0x6b, 0x22, 0x00, 0x0d, 0x00},
		[]byte{0x0b},
		[]byte{0x20, 0x01, 0x6a, 0x0b}))
	b.Export("run", KindFunc, run)
	b.Export("double", KindFunc, double)
	b.Export("memory", KindMemory, 0)
	bin := b.Bytes()
	m, err := Parse(bin)
	if err != nil {
		panic(err)
	}
	// Hand-add the table, element segment, start and a name section, which
	// the builder does not make.
	m.setSection(SecTable, []byte{1, 0x70, 0x00, 0x01}) // 1 funcref table, min 1
	m.setSection(SecStart, AppendU32(nil, start))
	elem := []byte{1, 0x00}               // one segment, flags 0
	elem = append(elem, 0x41, 0x00, 0x0b) // offset i32.const 0
	elem = append(elem, 1)                // one function
	elem = AppendU32(elem, double)        // double
	m.setSection(SecElement, elem)
	names := []byte{1} // function names subsection
	sub := AppendU32(nil, 1)
	sub = AppendU32(sub, run)
	sub = AppendName(sub, "run")
	names = AppendU32(names, uint32(len(sub)))
	names = append(names, sub...)
	m.Sections = append(m.Sections, Section{ID: SecCustom, Name: "name", Payload: names})
	m.Sections = append(m.Sections, Section{ID: SecCustom, Name: ".debug_info", Payload: []byte{1, 2, 3}})
	return m.Encode()
}

func TestMeteringPreservesBehaviour(t *testing.T) {
	bin := meteredModule()
	ctx := context.Background()
	want := int32(14 + 1 + 5050)
	for _, metered := range []bool{false, true} {
		b := bin
		checks := 0
		if metered {
			m, err := Parse(bin)
			if err != nil {
				t.Fatal(err)
			}
			if err := AddMetering(m, Metering{Module: "host", Fuel: "fuel", Bulk: "bulk", Limit: "limit", BulkCost: 10, StackBytes: 1 << 20, MinFrame: 64, TableElements: 1000}); err != nil {
				t.Fatal(err)
			}
			b = m.Encode()
			m2, _ := Parse(b)
			for _, s := range m2.Sections {
				if s.Name == ".debug_info" {
					t.Error("debug section kept")
				}
			}
			if m2.Section(SecCustom) == nil {
				t.Error("name section dropped")
			}
		}
		r := wazero.NewRuntime(ctx)
		env := r.NewHostModuleBuilder("env").NewFunctionBuilder().
			WithGoFunction(api.GoFunc(func(_ context.Context, st []uint64) { st[0] = 7 }), nil, []api.ValueType{api.ValueTypeI32}).Export("seven")
		if _, err := env.Instantiate(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := r.NewHostModuleBuilder("host").NewFunctionBuilder().
			WithGoFunction(api.GoFunc(func(_ context.Context, st []uint64) { checks++; st[0] = 3 }), nil, []api.ValueType{api.ValueTypeI32}).Export("fuel").
			NewFunctionBuilder().WithGoFunction(api.GoFunc(func(_ context.Context, st []uint64) { st[0] = 3 }), []api.ValueType{api.ValueTypeI32}, []api.ValueType{api.ValueTypeI32}).Export("bulk").
			NewFunctionBuilder().WithGoFunction(api.GoFunc(func(_ context.Context, st []uint64) { panic("limit") }), []api.ValueType{api.ValueTypeI32}, nil).Export("limit").
			Instantiate(ctx); err != nil {
			t.Fatal(err)
		}
		mod, err := r.Instantiate(ctx, b)
		if err != nil {
			t.Fatalf("metered=%v: %v", metered, err)
		}
		res, err := mod.ExportedFunction("run").Call(ctx)
		if err != nil || int32(res[0]) != want {
			t.Fatalf("metered=%v: run() = %v, %v; want %d", metered, res, err, want)
		}
		if metered && checks < 30 {
			// 100 loop iterations at 3 fuel per check-in.
			t.Errorf("only %d check-ins", checks)
		}
		r.Close(ctx)
	}
}

var testMetering = Metering{Module: "h", Fuel: "f", Bulk: "b", Limit: "l", BulkCost: 1, StackBytes: 1 << 20, MinFrame: 64, TableElements: 1000}

func TestUnsupportedOpcodeRefused(t *testing.T) {
	b := &Builder{}
	b.Export("f", KindFunc, b.Func(nil, nil, nil, []byte{0xf0, 0x0b}))
	m, err := Parse(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if err := AddMetering(m, testMetering); err == nil {
		t.Fatal("unknown opcode accepted")
	}
}

// FuzzParseAndMeter: for any bytes, either the module is refused (by
// wazero's validator, which the host runs first, or by the rewriter), or it
// is valid both before and after metering. Parse/Encode must also be exact.
// The seeds are generated modules and the hostile fixtures (testdata/fuzz).
func FuzzParseAndMeter(f *testing.F) {
	f.Add(meteredModule())
	f.Add([]byte("\x00asm\x01\x00\x00\x00"))
	for seed := uint64(1000); seed < 1010; seed++ {
		f.Add(genModule(seed))
	}
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	f.Cleanup(func() { rt.Close(ctx) })
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			return
		}
		if enc := m.Encode(); !bytes.Equal(enc, b) {
			// Parse/Encode is exact for well-framed input but for a
			// non-minimal section size.
			m2, err := Parse(enc)
			if err != nil || !bytes.Equal(m2.Encode(), enc) {
				t.Fatal("encode is not stable")
			}
		}
		// The host's order: Inspect and the locals limit, then the
		// validator, then the rewriter.
		info, err := Inspect(m)
		if err != nil || info.MaxLocals > 10_000 {
			return
		}
		compiled, err := compile(ctx, rt, b)
		if errors.Is(err, errPanicked) {
			// wazero's validator panics on some invalid modules (the host
			// recovers and refuses them); it must not run out of memory.
			return
		}
		if err != nil {
			// Refused by the validator: the host never rewrites it. The
			// rewriter must still not panic on it.
			_ = AddMetering(m, testMetering)
			return
		}
		compiled.Close(ctx)
		if err := AddMetering(m, testMetering); err != nil {
			return // refused by the rewriter
		}
		metered, err := compile(ctx, rt, m.Encode())
		if err != nil {
			t.Fatalf("valid module invalid after metering: %v", err)
		}
		metered.Close(ctx)
	})
}

var errPanicked = errors.New("the validator panicked")

func compile(ctx context.Context, rt wazero.Runtime, b []byte) (c wazero.CompiledModule, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", errPanicked, r)
		}
	}()
	return rt.CompileModule(ctx, b)
}

// TestBulkChargeAndTableClamp: a memory.fill of 2^32-1 bytes reaches the
// bulk import with the exact debt (no wrap) before it runs; a table's
// maximum is clamped so a grow past the limit returns -1 and is reported.
func TestBulkChargeAndTableClamp(t *testing.T) {
	b := &Builder{}
	b.Memory(1, -1)
	b.Table(1, -1)
	fill := b.Func(nil, nil, nil, Code(I32Const(0), I32Const(0), I32Const(-1), []byte{0xfc, 11, 0x00, 0x0b}))
	grow := b.Func([]byte{I32}, []byte{I32}, nil, Code([]byte{0xd0, 0x70, 0x20, 0x00, 0xfc, 15, 0x00, 0x0b}))
	b.Export("fill", KindFunc, fill)
	b.Export("grow", KindFunc, grow)
	m, err := Parse(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	cfg := Metering{Module: "m", Fuel: "fuel", Bulk: "bulk", Limit: "limit", BulkCost: 1000, StackBytes: 1 << 20, TableElements: 100}
	if err := AddMetering(m, cfg); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	var debts []int32
	var limits []uint64
	_, err = rt.NewHostModuleBuilder("m").
		NewFunctionBuilder().WithGoFunction(api.GoFunc(func(_ context.Context, st []uint64) { st[0] = 10 }), nil, []api.ValueType{api.ValueTypeI32}).Export("fuel").
		NewFunctionBuilder().WithGoFunction(api.GoFunc(func(_ context.Context, st []uint64) {
		debts = append(debts, int32(st[0]))
		if int32(st[0]) < -1<<20 {
			panic("refused")
		}
		st[0] = 10
	}), []api.ValueType{api.ValueTypeI32}, []api.ValueType{api.ValueTypeI32}).Export("bulk").
		NewFunctionBuilder().WithGoFunction(api.GoFunc(func(_ context.Context, st []uint64) { limits = append(limits, st[0]) }),
		[]api.ValueType{api.ValueTypeI32}, nil).Export("limit").
		Instantiate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mod, err := rt.Instantiate(ctx, m.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mod.ExportedFunction("fill").Call(ctx); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("fill: %v", err)
	}
	// Fuel starts at 0: 0 - (2^32-1)>>4 - 1000.
	if want := int32(-(1<<28 - 1) - 1000); len(debts) != 1 || debts[0] != want {
		t.Fatalf("debts %v, want [%d]", debts, want)
	}
	// The refused instance keeps its debt (the host discards it): a fresh
	// one for the grows.
	mod.Close(ctx)
	if mod, err = rt.Instantiate(ctx, m.Encode()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		n, want uint64
		limit   bool
	}{{50, 1, false}, {60, 0xffffffff, true}, {49, 51, false}, {1, 0xffffffff, true}, {0x7fffffff, 0xffffffff, true}} {
		limits = limits[:0]
		res, err := mod.ExportedFunction("grow").Call(ctx, tc.n)
		if err != nil || uint32(res[0]) != uint32(tc.want) || (len(limits) == 1) != tc.limit {
			t.Errorf("grow(%d) = %v, %v, limit calls %v; want %d, limit %v", tc.n, res, err, limits, int32(tc.want), tc.limit)
		}
	}
}

// TestFuelExport: with FuelExport the fuel counter is exported as a
// mutable global, and what the host sets it to is what the guest spends
// before its next check-in; a module that exports the name itself is
// refused.
func TestFuelExport(t *testing.T) {
	ctx := context.Background()
	m, err := Parse(meteredModule())
	if err != nil {
		t.Fatal(err)
	}
	cfg := Metering{Module: "host", Fuel: "fuel", Bulk: "bulk", Limit: "limit", BulkCost: 10, StackBytes: 1 << 20, MinFrame: 64,
		TableElements: 1000, FuelExport: "fuel_counter"}
	if err := AddMetering(m, cfg); err != nil {
		t.Fatal(err)
	}
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	if _, err := r.NewHostModuleBuilder("env").NewFunctionBuilder().
		WithGoFunction(api.GoFunc(func(_ context.Context, st []uint64) { st[0] = 7 }), nil, []api.ValueType{api.ValueTypeI32}).Export("seven").
		Instantiate(ctx); err != nil {
		t.Fatal(err)
	}
	checks := 0
	if _, err := r.NewHostModuleBuilder("host").NewFunctionBuilder().
		WithGoFunction(api.GoFunc(func(_ context.Context, st []uint64) { checks++; st[0] = 3 }), nil, []api.ValueType{api.ValueTypeI32}).Export("fuel").
		NewFunctionBuilder().WithGoFunction(api.GoFunc(func(_ context.Context, st []uint64) { st[0] = 3 }), []api.ValueType{api.ValueTypeI32}, []api.ValueType{api.ValueTypeI32}).Export("bulk").
		NewFunctionBuilder().WithGoFunction(api.GoFunc(func(_ context.Context, st []uint64) { panic("limit") }), []api.ValueType{api.ValueTypeI32}, nil).Export("limit").
		Instantiate(ctx); err != nil {
		t.Fatal(err)
	}
	mod, err := r.Instantiate(ctx, m.Encode())
	if err != nil {
		t.Fatal(err)
	}
	fuel, ok := mod.ExportedGlobal("fuel_counter").(api.MutableGlobal)
	if !ok {
		t.Fatal("the fuel counter is not exported as a mutable global")
	}
	for _, tc := range []struct {
		set  uint64
		want func(int) bool
	}{{0, func(n int) bool { return n >= 30 }}, {1 << 28, func(n int) bool { return n == 0 }}} {
		checks = 0
		fuel.Set(tc.set)
		if res, err := mod.ExportedFunction("run").Call(ctx); err != nil || int32(res[0]) != 14+1+5050 {
			t.Fatalf("run() = %v, %v", res, err)
		}
		if !tc.want(checks) {
			t.Errorf("fuel set to %d: %d check-ins", tc.set, checks)
		}
	}

	b := &Builder{}
	b.Export("fuel_counter", KindFunc, b.Func(nil, nil, nil, []byte{0x0b}))
	m2, err := Parse(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if err := AddMetering(m2, cfg); err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Fatalf("a module exporting the counter's name: %v", err)
	}
}
