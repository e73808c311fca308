package wasmhost

import (
	"context"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/metastore-dev/metastore/wasmhost/internal/wasmbin"
	"github.com/metastore-dev/metastore/wasmhost/wasmtest"

	"github.com/metastore-dev/metastore/internal/policyabi"
)

const tenantPkg = "policies/tenantisolation"

func tenantRequest(b testing.TB) []byte {
	return encode(b, &Request{Op: policyabi.OpPut, User: "alice", Roles: []string{"dev"},
		Ranges: []Range{{Perm: policyabi.PermWrite, Key: []byte("/tenants/alice/config/x")}}})
}

// benchLimits raises the deadline: on a shared machine the OS deschedules a
// thread for more than 5ms now and then, and a benchmark measures cost, not
// that.
func benchLimits(c *Config) { c.Limits.AuthorizeTimeout = time.Second }

// reportPercentiles times each op separately and reports p50 and p99.
func reportPercentiles(b *testing.B, op func()) {
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		op()
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
}

// BenchmarkTenantIsolationDecision is the per-decision cost of the
// tenant-isolation Go-SDK policy through Policy.Authorize: pool get/put,
// request copy, the metered guest call (the deadline guard) and the verdict.
func BenchmarkTenantIsolationDecision(b *testing.B) {
	h := newHost(b, nil)
	p := loadGo(b, h, tenantPkg, `{}`, benchLimits)
	req := tenantRequest(b)
	ctx := context.Background()
	b.ReportAllocs()
	reportPercentiles(b, func() {
		if d := p.Authorize(ctx, req); d.Verdict != Allow {
			b.Fatal(d)
		}
	})
}

func BenchmarkTenantIsolationDecisionParallel(b *testing.B) {
	h := newHost(b, nil)
	p := loadGo(b, h, tenantPkg, `{}`, benchLimits)
	req := tenantRequest(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if d := p.Authorize(ctx, req); d.Verdict != Allow {
				b.Error(d)
				return
			}
		}
	})
}

// BenchmarkDeadlineGuard compares ways of bounding a guest call on the same
// module and request, calling the export directly: no guard at all, our
// metering, and wazero's WithCloseOnContextDone with a per-call deadline.
func BenchmarkDeadlineGuard(b *testing.B) {
	raw := wasmtest.GoPolicy(b, tenantPkg)
	req := tenantRequest(b)
	for _, mode := range []string{"none", "metering", "close-on-context-done"} {
		b.Run(mode, func(b *testing.B) {
			// The metering check-ins need an instance to charge (with no
			// deadline, no budget and no CPU slots here).
			ctx := context.WithValue(context.Background(), instanceKey{}, &instance{v: &version{policy: &Policy{host: &Host{}}}})
			bin := raw
			cfg := wazero.NewRuntimeConfigCompiler()
			if mode == "close-on-context-done" {
				cfg = cfg.WithCloseOnContextDone(true)
			}
			r := wazero.NewRuntimeWithConfig(ctx, cfg)
			defer r.Close(ctx)
			wasi_snapshot_preview1.MustInstantiate(ctx, r)
			hb := r.NewHostModuleBuilder(ImportModule).
				NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(hostLog), []api.ValueType{i32, i32, i32}, nil).Export(ImportLog)
			if mode == "metering" {
				m, err := wasmbin.Parse(bin)
				if err != nil {
					b.Fatal(err)
				}
				if err := wasmbin.AddMetering(m, metering(DefaultLimits())); err != nil {
					b.Fatal(err)
				}
				bin = m.Encode()
				hb = hb.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(hostFuel), nil, []api.ValueType{i32}).Export(importFuel).
					NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(hostBulk), []api.ValueType{i32}, []api.ValueType{i32}).Export(importBulk).
					NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(hostLimit), []api.ValueType{i32}, nil).Export(importLimit)
			}
			if _, err := hb.Instantiate(ctx); err != nil {
				b.Fatal(err)
			}
			mod, err := r.InstantiateWithConfig(ctx, bin, wazero.NewModuleConfig().WithStartFunctions("_initialize"))
			if err != nil {
				b.Fatal(err)
			}
			stack := make([]uint64, 2)
			stack[0] = uint64(len(req))
			if err := mod.ExportedFunction(ExportBuffer).CallWithStack(ctx, stack); err != nil {
				b.Fatal(err)
			}
			ptr := uint32(stack[0])
			mod.Memory().Write(ptr, req)
			stack[0], stack[1] = 0, 0
			if err := mod.ExportedFunction(ExportInit).CallWithStack(ctx, stack); err != nil {
				b.Fatal(err)
			}
			f := mod.ExportedFunction(ExportAuthorize)
			fuel, _ := mod.ExportedGlobal(exportFuel).(api.MutableGlobal)
			reportPercentiles(b, func() {
				if fuel != nil {
					fuel.Set(fuelQuantum) // as instance.call does
				}
				c := ctx
				var cancel context.CancelFunc
				if mode == "close-on-context-done" {
					// The cost is the per-call goroutine and the exits at loop
					// back-edges, not the deadline's length; a long one keeps a
					// descheduled call on a busy machine from failing the run.
					c, cancel = context.WithTimeout(ctx, time.Second)
				}
				stack[0], stack[1] = uint64(ptr), uint64(len(req))
				if err := f.CallWithStack(c, stack); err != nil {
					b.Fatal(err)
				}
				if cancel != nil {
					cancel()
				}
				if Verdict(stack[0]) != Allow {
					b.Fatal(stack[0])
				}
			})
		})
	}
}

// BenchmarkCompile measures loading the tenant-isolation module (read,
// check, meter, compile, first instance) with a cold compilation cache and
// with a warm on-disk one (a restart).
func BenchmarkCompile(b *testing.B) {
	bin := wasmtest.GoPolicy(b, tenantPkg)
	for _, warm := range []bool{false, true} {
		name := "cold"
		if warm {
			name = "disk-cache"
		}
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			if warm {
				h, _ := NewHost(Options{CacheDir: dir})
				p, err := h.Load(context.Background(), Config{Name: "t", Binary: bin})
				if err != nil {
					b.Fatal(err)
				}
				p.Close()
				h.Close(context.Background())
			}
			var compile time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				d := dir
				if !warm {
					d, _ = os.MkdirTemp(dir, "c")
				}
				h, _ := NewHost(Options{CacheDir: d, Events: Events{Compiled: func(_ string, t time.Duration) { compile += t }}})
				b.StartTimer()
				p, err := h.Load(context.Background(), Config{Name: "t", Binary: bin, Limits: Limits{Instances: 1}})
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				p.Close()
				h.Close(context.Background())
				b.StartTimer()
			}
			b.ReportMetric(float64(compile.Milliseconds())/float64(b.N), "compile-ms")
		})
	}
}

// BenchmarkInstantiate measures one new instance: instantiate, _initialize
// (the Go runtime's start) and policy_init.
func BenchmarkInstantiate(b *testing.B) {
	h := newHost(b, nil)
	p := loadGo(b, h, tenantPkg, `{}`, func(c *Config) { c.Limits.Instances = 1 })
	v := p.cur.Load()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		inst, err := v.newInstance()
		if err != nil {
			b.Fatal(err)
		}
		inst.close()
	}
}
