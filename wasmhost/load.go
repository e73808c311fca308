package wasmhost

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/metastore-dev/metastore/wasmhost/internal/wasmbin"
)

// LoadError is a module refused at load or reload. Its message names the
// policy, the file and the problem.
type LoadError struct {
	Policy string
	Path   string
	Err    error
}

func (e *LoadError) Error() string {
	path := e.Path
	if path == "" {
		path = "<memory>"
	}
	return fmt.Sprintf("policy %q (%s): %v", e.Policy, path, e.Err)
}

func (e *LoadError) Unwrap() error { return e.Err }

// ErrSHA256Mismatch is returned (wrapped in a LoadError) when a module's
// digest differs from the configured one.
var ErrSHA256Mismatch = errors.New("sha256 mismatch")

// fuelQuantum is how much fuel (about one instruction a unit, see
// wasmbin's weights) a guest spends between two check-ins with the host:
// ~30–100 µs of guest code. It bounds how late a deadline is noticed and
// how long a GC stop-the-world can wait for a spinning guest.
//
// NB: at 10,000 a tenant-isolation decision (~7,000 units) checked in
// nearly every call and cost 1.6 µs instead of 0.87 µs (p50); at 100,000
// it costs 0.9 µs, and the deadline is still noticed within ~0.1 ms.
const fuelQuantum = 100_000

// bulkFuel is the fixed part of what a bulk memory or table instruction
// costs in fuel; the rest is in proportion to its size (see
// wasmbin.MemoryShift and TableShift).
const bulkFuel = 1_000

// version is one loaded module of a policy: its runtime, compiled code and
// pool. A reload builds a new version and retires the old one.
type version struct {
	policy   *Policy
	cfg      Config
	limits   Limits
	sha256   string
	rt       wazero.Runtime
	compiled wazero.CompiledModule
	modCfg   wazero.ModuleConfig
	hooks    [2]bool // HookAuthorize, HookAdmit
	initRT   bool    // exports _initialize
	pool     *pool

	compileTime time.Duration
}

// readModule returns the module bytes, enforcing the size limit before
// reading a whole file.
func readModule(cfg *Config, limit int64) ([]byte, error) {
	if cfg.Binary != nil {
		if int64(len(cfg.Binary)) > limit {
			return nil, fmt.Errorf("module is %d bytes, over the %d-byte limit", len(cfg.Binary), limit)
		}
		return cfg.Binary, nil
	}
	f, err := os.Open(cfg.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	bin, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(bin)) > limit {
		return nil, fmt.Errorf("module is over the %d-byte limit", limit)
	}
	return bin, nil
}

// wantExport is the signature an ABI export must have.
type wantExport struct {
	params, results []api.ValueType
}

var (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64

	abiExports = map[string]wantExport{
		ExportMarker:    {nil, nil},
		ExportInitRT:    {nil, nil},
		ExportBuffer:    {[]api.ValueType{i32}, []api.ValueType{i32}},
		ExportInit:      {[]api.ValueType{i32, i32}, []api.ValueType{i32}},
		ExportAuthorize: {[]api.ValueType{i32, i32}, []api.ValueType{i32}},
		ExportAdmit:     {[]api.ValueType{i32, i32}, []api.ValueType{i32}},
		ExportReason:    {nil, []api.ValueType{i64}},
		ExportMutation:  {nil, []api.ValueType{i64}},
	}
)

func sameTypes(a, b []api.ValueType) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// checkImports refuses any import other than metastore.log and WASI preview
// 1 functions.
func checkImports(m *wasmbin.Module) error {
	imports, err := m.Imports()
	if err != nil {
		return err
	}
	for _, imp := range imports {
		switch {
		case imp.Kind != wasmbin.KindFunc:
			return fmt.Errorf("import %s.%s is not a function; only functions may be imported", imp.Module, imp.Name)
		case imp.Module == ImportModule && imp.Name == ImportLog:
		case imp.Module == wasiModule && wasiNames[imp.Name]:
		default:
			return fmt.Errorf("import %s.%s is not granted (allowed: %s.%s and %s functions)",
				imp.Module, imp.Name, ImportModule, ImportLog, wasiModule)
		}
	}
	return nil
}

// compile reads, checks, meters and compiles cfg's module into a new
// runtime, and creates its first instance (which runs policy_init), so a
// module that fails anywhere is refused before it serves.
func (p *Policy) compile(ctx context.Context, cfg Config) (v *version, err error) {
	start := time.Now()
	limits := cfg.Limits.withDefaults()
	fail := func(err error) (*version, error) {
		return nil, &LoadError{Policy: cfg.Name, Path: cfg.Path, Err: err}
	}
	if err := limits.Validate(); err != nil {
		return fail(err)
	}
	bin, err := readModule(&cfg, limits.ModuleBytes)
	if err != nil {
		return fail(err)
	}
	sum := sha256.Sum256(bin)
	digest := hex.EncodeToString(sum[:])
	if cfg.SHA256 != "" && !strings.EqualFold(cfg.SHA256, digest) {
		return fail(fmt.Errorf("%w: file has %s, config says %s", ErrSHA256Mismatch, digest, cfg.SHA256))
	}
	pages := uint32(limits.MemoryBytes >> 16)
	// Our own decoder and the structural limits first: they are cheap, keep
	// a 100k-function module from costing seconds in the validator, and
	// keep from wazero's decoder what it cannot take (a vector count larger
	// than its section makes it allocate that count up front; a locals
	// count of 2^32 too). Then the validator on the bytes as submitted, then
	// the rewriting.
	parsed, err := wasmbin.Parse(bin)
	var info *wasmbin.Info
	if err == nil {
		info, err = wasmbin.Inspect(parsed)
	}
	if err != nil {
		return fail(fmt.Errorf("invalid module: %w", err))
	}
	if err := checkStructure(info, limits); err != nil {
		return fail(err)
	}
	if err := p.host.validate(ctx, bin, digest, pages); err != nil {
		return fail(err)
	}
	rtCfg := wazero.NewRuntimeConfigCompiler().
		WithCompilationCache(p.host.cache).
		WithMemoryLimitPages(pages).
		WithCloseOnContextDone(false) // metering stops runaway guests; see wasmbin.AddMetering
	rt := wazero.NewRuntimeWithConfig(ctx, rtCfg)
	defer func() {
		if err != nil {
			rt.Close(ctx)
		}
	}()
	if err := instantiateWASI(ctx, rt); err != nil {
		return fail(fmt.Errorf("wasi: %w", err))
	}
	if err := checkImports(parsed); err != nil {
		return fail(err)
	}
	if err := wasmbin.AddMetering(parsed, metering(limits)); err != nil {
		return fail(fmt.Errorf("metering: %w", err))
	}
	// The compiler's cost is checked on what it compiles: the metered
	// module (metering adds an if per loop and per check).
	ctl, err := wasmbin.ControlOf(parsed)
	if err != nil {
		return fail(fmt.Errorf("metering: %w", err))
	}
	if err := checkControl(ctl, limits); err != nil {
		return fail(err)
	}
	if err := instantiateHostModule(ctx, rt); err != nil {
		return fail(fmt.Errorf("host module: %w", err))
	}
	compiled, err := rt.CompileModule(ctx, parsed.Encode())
	if err != nil {
		return fail(fmt.Errorf("compile: %w", err))
	}

	v = &version{policy: p, cfg: cfg, limits: limits, sha256: digest, rt: rt, compiled: compiled}
	if err := v.checkExports(); err != nil {
		return fail(err)
	}
	v.compileTime = time.Since(start)
	if f := p.host.events.Compiled; f != nil {
		f(cfg.Name, v.compileTime)
	}
	// The sandbox (no filesystem, environment, arguments or real clock) is
	// the host's own WASI (wasi.go); no _start is called.
	v.modCfg = wazero.NewModuleConfig().
		WithName("").
		WithStartFunctions()
	// The whole pool is warmed here, off the request path: a reloaded
	// version must not meet its first burst of calls with one instance.
	v.pool = newPool(v)
	warm := make([]*instance, 0, v.pool.target)
	for range v.pool.target {
		inst, err := v.newInstance()
		if err != nil {
			for _, w := range warm {
				w.close()
			}
			return fail(err)
		}
		warm = append(warm, inst)
	}
	v.pool.start(warm)
	return v, nil
}

func (v *version) checkExports() error {
	fns := v.compiled.ExportedFunctions()
	if _, ok := v.compiled.ExportedMemories()[ExportMemory]; !ok {
		return fmt.Errorf("missing export %q (a memory)", ExportMemory)
	}
	if _, ok := fns[ExportMarker]; !ok {
		return fmt.Errorf("missing export %q: not a metastore policy of ABI v1", ExportMarker)
	}
	for name, want := range abiExports {
		def, ok := fns[name]
		if !ok {
			continue
		}
		if !sameTypes(def.ParamTypes(), want.params) || !sameTypes(def.ResultTypes(), want.results) {
			return fmt.Errorf("export %q has signature %v -> %v, want %v -> %v",
				name, def.ParamTypes(), def.ResultTypes(), want.params, want.results)
		}
	}
	for _, name := range []string{ExportBuffer, ExportInit, ExportReason} {
		if _, ok := fns[name]; !ok {
			return fmt.Errorf("missing export %q", name)
		}
	}
	_, v.hooks[HookAuthorize] = fns[ExportAuthorize]
	_, v.hooks[HookAdmit] = fns[ExportAdmit]
	_, v.initRT = fns[ExportInitRT]
	if !v.hooks[HookAuthorize] && !v.hooks[HookAdmit] {
		return fmt.Errorf("exports neither %q nor %q", ExportAuthorize, ExportAdmit)
	}
	if _, ok := fns[ExportMutation]; v.hooks[HookAdmit] && !ok {
		return fmt.Errorf("missing export %q (required with %q)", ExportMutation, ExportAdmit)
	}
	return nil
}

// close releases the runtime once every instance is gone.
func (v *version) close() {
	v.rt.Close(context.Background())
}
