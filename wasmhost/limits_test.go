package wasmhost

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/metastore-dev/metastore/wasmhost/internal/wasmbin"
	"github.com/metastore-dev/metastore/wasmhost/wasmtest"
)

// TestInvalidRefusedBeforeRewrite: modules that are invalid as submitted but
// would be valid after metering (their out-of-range index would reach the
// host's fuel or stack counter, scratch local or check type) are refused
// with the validator's message; the rewriter refuses them on its own too.
func TestInvalidRefusedBeforeRewrite(t *testing.T) {
	h := newHost(t, nil)
	for _, name := range []string{"oob-global", "oob-global-stack", "oob-local", "oob-block-type"} {
		_, err := h.Load(context.Background(), Config{Name: name, Binary: modules[name]})
		var le *LoadError
		if !errors.As(err, &le) || !strings.Contains(err.Error(), "invalid module") {
			t.Errorf("%s: got %v, want a LoadError from the validator", name, err)
		}
		m, err := wasmbin.Parse(modules[name])
		if err != nil {
			t.Fatal(err)
		}
		if err := wasmbin.AddMetering(m, metering(DefaultLimits())); err == nil {
			t.Errorf("%s: the rewriter accepted it", name)
		} else {
			t.Logf("%s: rewriter: %v", name, err)
		}
	}
}

func TestStructuralLimits(t *testing.T) {
	h := newHost(t, nil)
	ctx := context.Background()
	start := time.Now()
	_, err := h.Load(ctx, Config{Name: "many", Binary: modules["many-functions"]})
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "function count 100006 is over the limit of 20000") {
		t.Errorf("many-functions: %v", err)
	}
	t.Logf("100k-function module refused in %v", took)
	if took > time.Second {
		t.Errorf("refusing the 100k-function module took %v", took)
	}
	allow := modules["allow"]
	for _, tc := range []struct {
		name string
		bin  []byte
		l    Limits
		want string
	}{
		{"table", modules["table-declared-huge"], Limits{}, "table 0 size 50000000 is over the limit of 100000"},
		{"huge-vector", modules["huge-vector"], Limits{}, "invalid module: section 7: vector longer than its section: 4294967295 elements"},
		{"tables", modules["table-grow-ok"], Limits{Tables: 1, TableElements: 0}, ""},
		{"code", allow, Limits{CodeBytes: 10}, "code section size"},
		{"funcs", allow, Limits{Functions: 5}, "function count 7 is over the limit of 5"},
		{"huge-locals", wasmtest.Build(wasmtest.Spec{Authorize: wasmtest.Return(1), Funcs: [][]byte{{0x0b}},
			FuncLocals: [][]byte{append(wasmbin.AppendU32([]byte{1}, 20_000), wasmbin.I64)}}),
			Limits{}, "locals of one function 20001 is over the limit of 10000"},
		{"locals-ok", wasmtest.Build(wasmtest.Spec{Authorize: wasmtest.Return(1), Funcs: [][]byte{{0x0b}},
			FuncLocals: [][]byte{append(wasmbin.AppendU32([]byte{1}, 20_000), wasmbin.I64)}}),
			Limits{LocalsPerFunction: 30_000}, ""},
		{"globals", wasmtest.Build(wasmtest.Spec{Authorize: wasmtest.Return(1)}), Limits{Globals: 1}, ""},
	} {
		p, err := h.Load(ctx, Config{Name: tc.name, Binary: tc.bin, Limits: tc.l})
		if err == nil {
			p.Close()
		}
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		var le *LoadError
		if !errors.As(err, &le) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want a LoadError with %q", tc.name, err, tc.want)
		}
	}
}

func TestLimitsValidate(t *testing.T) {
	for _, tc := range []struct {
		l    Limits
		want string
	}{
		{Limits{Functions: -1}, "functions -1 is negative"},
		{Limits{StackBytes: 2 << 30}, "stack bytes"},
		{Limits{TableElements: 1 << 29}, "table elements"},
		{Limits{CallDepth: 100, StackBytes: 10}, "call depth 100 is over stack bytes 10"},
		{Limits{Instances: 64, MemoryBytes: 1 << 30}, "is over the total memory limit"},
	} {
		err := tc.l.withDefaults().Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want %q", tc.l, err, tc.want)
		}
	}
	if err := DefaultLimits().Validate(); err != nil {
		t.Fatal(err)
	}
	// Left at its default, the instance count shrinks to fit the total.
	l := Limits{MemoryBytes: 1 << 30, TotalMemoryBytes: 3 << 30}.withDefaults()
	if l.Instances > 2 || l.Validate() != nil {
		t.Errorf("instances %d, %v", l.Instances, l.Validate())
	}
}

// heapInuse is the Go heap in use after a GC (wazero's guest memories,
// stacks and tables are Go slices).
func heapInuse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// waitIdle waits until p's pool holds an idle instance, so that a timed
// call measures the call and not the refill after a discarded instance.
func waitIdle(t *testing.T, p *Policy) {
	t.Helper()
	pl := p.cur.Load().pool
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		for i := range pl.shards {
			s := &pl.shards[i]
			s.mu.Lock()
			n := len(s.items)
			s.mu.Unlock()
			if n > 0 {
				return
			}
		}
	}
	t.Fatal("no idle instance after 10s")
}

// allocated is the bytes the process allocated so far.
func allocated() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.TotalAlloc
}

// TestLimitsContained calls each hostile guest of the resource limits in a
// loop: every call fails with its kind, ends within twice its deadline
// (plus scheduling slack on a loaded machine), and the process survives
// without its heap growing by the attack.
func TestLimitsContained(t *testing.T) {
	const deadline = 10 * time.Millisecond
	rec := &recorder{}
	h := newHost(t, rec)
	req := testRequest(t)
	ctx := context.Background()
	big := func(c *Config) {
		c.Limits.MemoryBytes = 320 << 20
		c.Limits.Instances = 1
		c.Limits.AuthorizeTimeout = deadline
	}
	small := func(c *Config) {
		c.Limits.Instances = 1
		c.Limits.AuthorizeTimeout = deadline
	}
	// The 1 MiB fill loop runs up to its deadline moving memory at full
	// speed: on a loaded machine the last fills are slower than the host's
	// estimate; a longer deadline keeps that noise under the 2× bound.
	bigLong := func(c *Config) {
		big(c)
		c.Limits.AuthorizeTimeout = 25 * time.Millisecond
	}
	// Reaching the stack limit takes 10,000 calls: a deadline that a slow
	// (race-enabled, loaded) run cannot hit first.
	deep := func(c *Config) {
		c.Limits.Instances = 1
		c.Limits.AuthorizeTimeout = 10 * deadline
	}
	heap0 := heapInuse()
	var worst time.Duration
	var times []time.Duration
	var worstName string
	for _, tc := range []struct {
		name string
		kind ErrorKind
		cfg  func(*Config)
	}{
		{"table-grow-huge", KindTable, small},
		{"table-grow-steps", KindTable, small},
		{"table-fill-loop", KindTimeout, small},
		{"deep-recursion", KindStack, deep},
		{"huge-frame-recursion", KindStack, deep},
		{"recursion", KindTimeout, small},
		{"loop", KindTimeout, small},
		{"fill-loop", KindTimeout, big},
		{"fill-loop-1mib", KindTimeout, bigLong},
		{"copy-loop", KindTimeout, big},
		{"grow-in-call", KindTimeout, big},
	} {
		p := load(t, h, tc.name, tc.cfg)
		deadline := p.cur.Load().limits.AuthorizeTimeout
		before := rec.errCount(tc.kind)
		for i := 0; i < 5; i++ {
			waitIdle(t, p)
			start := time.Now()
			d := p.Authorize(ctx, req)
			took := time.Since(start)
			if d.Err == nil || d.Kind != tc.kind {
				t.Fatalf("%s: decision %+v (kind %s), want a %s failure", tc.name, d, d.Kind, tc.kind)
			}
			if took > worst {
				worst, worstName = took, tc.name
			}
			if took > timingSlack*(2*deadline+40*time.Millisecond) {
				t.Errorf("%s: call took %v against a %v deadline", tc.name, took, deadline)
			}
			times = append(times, took)
		}
		// One descheduled call may pass 2× on a loaded machine; the median
		// may not.
		slices.Sort(times)
		if med := times[len(times)/2]; med > timingSlack*2*deadline {
			t.Errorf("%s: median call %v against a %v deadline", tc.name, med, deadline)
		}
		t.Logf("%s: median %v, worst %v against a %v deadline", tc.name, times[len(times)/2], times[len(times)-1], deadline)
		times = times[:0]
		if got := rec.errCount(tc.kind) - before; got != 5 {
			t.Errorf("%s: %d %s errors reported, want 5", tc.name, got, tc.kind)
		}
		p.Close()
	}
	t.Logf("worst call: %v (%s)", worst, worstName)
	if grown := int64(heapInuse()) - int64(heap0); grown > 64<<20 {
		t.Errorf("heap grew by %d MiB", grown>>20)
	}
}

// TestStackBytesBound: a recursion stopped by the stack limit leaves wazero's
// guest stack (a Go slice that never shrinks) near the configured bytes,
// where without the limit it reached hundreds of MiB.
func TestStackBytesBound(t *testing.T) {
	h := newHost(t, nil)
	req := testRequest(t)
	for _, name := range []string{"deep-recursion", "huge-frame-recursion"} {
		p := load(t, h, name, func(c *Config) {
			c.Limits.Instances = 1
			c.Limits.AuthorizeTimeout = time.Second
		})
		before := allocated()
		d := p.Authorize(context.Background(), req)
		if d.Kind != KindStack || !errors.Is(d.Err, ErrStackLimit) {
			t.Fatalf("%s: %+v", name, d)
		}
		grown := allocated() - before
		t.Logf("%s: %d KiB allocated by the call", name, grown>>10)
		if grown > 32<<20 {
			t.Errorf("%s: the call allocated %d MiB for a %d-byte stack limit", name, grown>>20, DefaultLimits().StackBytes)
		}
		p.Close()
	}
}

func TestLegitimateUseWithinLimits(t *testing.T) {
	h := newHost(t, nil)
	req := testRequest(t)
	for _, name := range []string{"recursion-ok", "table-grow-ok", "fill-small-once"} {
		p := load(t, h, name, nil)
		if d := p.Authorize(context.Background(), req); d.Verdict != Allow || d.Err != nil {
			t.Errorf("%s: %+v", name, d)
		}
	}
}
