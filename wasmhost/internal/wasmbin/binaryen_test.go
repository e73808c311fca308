package wasmbin

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// TestDifferentialBinaryen runs the differential test on modules made by a
// maintained generator, binaryen's translate-to-fuzz mode (`wasm-opt -ttf`,
// Debian package binaryen), when it is installed: random bytes become a
// valid module with loops (bounded by binaryen's hang limit), calls,
// indirect calls, bulk memory, multi-value and floats. Each export runs on
// the original and on the metered module on the same engine (so NaN bits
// compare too), on the interpreter and on the compiler; results, traps,
// the log calls and the final memory must match.
func TestDifferentialBinaryen(t *testing.T) {
	wasmOpt, err := exec.LookPath("wasm-opt")
	if err != nil {
		t.Skip("wasm-opt (binaryen) not installed")
	}
	n := 100
	if testing.Short() {
		n = 10
	}
	dir := t.TempDir()
	ctx := context.Background()
	cfg := Metering{Module: "m", Fuel: "fuel", Bulk: "bulk", Limit: "limit", BulkCost: 3, StackBytes: 1 << 24, MinFrame: 16, TableElements: 1 << 16}
	r := rand.New(rand.NewPCG(1, 2))
	tested := 0
	for i := 0; i < n; i++ {
		seed := make([]byte, 1000+r.IntN(8000))
		for j := range seed {
			seed[j] = byte(r.Uint32())
		}
		in, out := filepath.Join(dir, "seed"), filepath.Join(dir, "m.wasm")
		if err := os.WriteFile(in, seed, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(wasmOpt, "-ttf", in, "-o", out, "--mvp-features", "--enable-bulk-memory",
			"--enable-sign-ext", "--enable-nontrapping-float-to-int", "--enable-mutable-globals", "--enable-multivalue", "--enable-simd")
		if msg, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("wasm-opt: %v: %s", err, msg)
		}
		bin, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		for _, interp := range []bool{true, false} {
			var rcfg wazero.RuntimeConfig
			if interp {
				rcfg = wazero.NewRuntimeConfigInterpreter()
			} else {
				rcfg = wazero.NewRuntimeConfigCompiler()
			}
			want, ok := runBinaryen(t, ctx, rcfg, bin, nil, 0)
			if !ok {
				t.Logf("module %d: refused by wazero, skipped", i)
				break
			}
			m, err := Parse(bin)
			if err != nil {
				t.Fatal(err)
			}
			info, err := Inspect(m)
			if err != nil {
				t.Fatal(err)
			}
			if err := AddMetering(m, cfg); err != nil {
				t.Fatalf("module %d: %v", i, err)
			}
			exportStack(m, info)
			got, ok := runBinaryen(t, ctx, rcfg, m.Encode(), &cfg, info.Globals+1)
			if !ok {
				t.Fatalf("module %d: the metered module is refused", i)
			}
			if got.log != want.log {
				t.Fatalf("module %d (interpreter %v): runs differ:\n got %s\nwant %s", i, interp, got.log, want.log)
			}
			if !bytes.Equal(got.memory, want.memory) {
				t.Fatalf("module %d (interpreter %v): memory differs", i, interp)
			}
			tested++
		}
	}
	if tested < n {
		t.Errorf("only %d of %d runs compared", tested, 2*n)
	}
	t.Logf("%d module runs compared", tested)
}

// exportStack exports the stack budget global as "__stack".
func exportStack(m *Module, info *Info) {
	exps, _ := m.Exports()
	p := AppendU32(nil, uint32(len(exps)+1))
	for _, e := range exps {
		p = AppendName(p, e.Name)
		p = append(p, e.Kind)
		p = AppendU32(p, e.Index)
	}
	p = AppendName(p, "__stack")
	p = append(p, KindGlobal)
	p = AppendU32(p, info.Globals+1)
	m.setSection(SecExport, p)
}

type binaryenRun struct {
	log    string
	memory []byte
}

// runBinaryen calls every exported function of a ttf module (resetting
// binaryen's hang limit before each) with zero arguments. With cfg set the
// module is metered: the host refuels, and the stack budget must be back
// after every call that returned.
func runBinaryen(t *testing.T, ctx context.Context, rcfg wazero.RuntimeConfig, bin []byte, cfg *Metering, stackGlobal uint32) (binaryenRun, bool) {
	t.Helper()
	rt := wazero.NewRuntimeWithConfig(ctx, rcfg)
	defer rt.Close(ctx)
	var log bytes.Buffer
	logf := func(kind string, t api.ValueType) api.GoFunction {
		return api.GoFunc(func(_ context.Context, st []uint64) {
			v := st[0]
			if t == api.ValueTypeI32 || t == api.ValueTypeF32 {
				v = uint64(uint32(v)) // the compiler leaves the upper half undefined
			}
			fmt.Fprintf(&log, "%s(%#x) ", kind, v)
		})
	}
	hb := rt.NewHostModuleBuilder("fuzzing-support")
	for _, f := range []struct {
		name string
		t    api.ValueType
	}{{"log-i32", api.ValueTypeI32}, {"log-i64", api.ValueTypeI64}, {"log-f32", api.ValueTypeF32}, {"log-f64", api.ValueTypeF64}} {
		hb = hb.NewFunctionBuilder().WithGoFunction(logf(f.name, f.t), []api.ValueType{f.t}, nil).Export(f.name)
	}
	if _, err := hb.Instantiate(ctx); err != nil {
		t.Fatal(err)
	}
	if cfg != nil {
		refuel := api.GoFunc(func(_ context.Context, st []uint64) { st[0] = 7 })
		if _, err := rt.NewHostModuleBuilder(cfg.Module).
			NewFunctionBuilder().WithGoFunction(refuel, nil, []api.ValueType{api.ValueTypeI32}).Export(cfg.Fuel).
			NewFunctionBuilder().WithGoFunction(refuel, []api.ValueType{api.ValueTypeI32}, []api.ValueType{api.ValueTypeI32}).Export(cfg.Bulk).
			NewFunctionBuilder().WithGoFunction(api.GoFunc(func(_ context.Context, st []uint64) {
			if uint32(st[0]) == LimitStack {
				panic("stack limit")
			}
		}), []api.ValueType{api.ValueTypeI32}, nil).Export(cfg.Limit).
			Instantiate(ctx); err != nil {
			t.Fatal(err)
		}
	}
	compiled, err := rt.CompileModule(ctx, bin)
	if err != nil {
		return binaryenRun{}, false
	}
	mod, err := rt.InstantiateModule(ctx, compiled, wazero.NewModuleConfig().WithName(""))
	if err != nil {
		fmt.Fprintf(&log, "instantiate: trap ")
		return binaryenRun{log: log.String()}, true
	}
	var stack api.MutableGlobal
	if cfg != nil {
		stack = mod.ExportedGlobal("__stack").(api.MutableGlobal)
	}
	reset := mod.ExportedFunction("hangLimitInitializer")
	for _, def := range sortedExports(compiled) {
		if def == "hangLimitInitializer" {
			continue
		}
		f := mod.ExportedFunction(def)
		if reset != nil {
			if _, err := reset.Call(ctx); err != nil {
				t.Fatal(err)
			}
		}
		args := make([]uint64, len(f.Definition().ParamTypes()))
		res, err := f.Call(ctx, args...)
		if err != nil {
			fmt.Fprintf(&log, "%s: trap\n", def)
		} else {
			for i, rt := range f.Definition().ResultTypes() {
				if rt == api.ValueTypeI32 || rt == api.ValueTypeF32 {
					res[i] = uint64(uint32(res[i]))
				}
			}
			fmt.Fprintf(&log, "%s: %#x\n", def, res)
		}
		if stack != nil {
			if got := int32(stack.Get()); err == nil && got != cfg.StackBytes {
				t.Fatalf("%s: stack budget %d after the call, want %d", def, got, cfg.StackBytes)
			}
			stack.Set(uint64(uint32(cfg.StackBytes)))
		}
	}
	var memory []byte
	if mem := mod.ExportedMemory("memory"); mem != nil {
		b, _ := mem.Read(0, mem.Size())
		memory = bytes.Clone(b)
	}
	return binaryenRun{log: log.String(), memory: memory}, true
}

func sortedExports(c wazero.CompiledModule) []string {
	var names []string
	for name := range c.ExportedFunctions() {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}
