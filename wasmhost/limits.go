package wasmhost

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/metastore-dev/metastore/wasmhost/internal/wasmbin"
)

// Host functions that metering adds to every module besides importFuel (see
// wasmbin.AddMetering); a guest may not import them itself.
const (
	importBulk  = "__metastore_bulk"
	importLimit = "__metastore_limit"
)

// exportFuel is the fuel counter that metering exports for the host, which
// sets it to a full quantum before each call (instance.call).
const exportFuel = "__metastore_fuel_counter"

// ErrStackLimit fails a call whose stack would pass Limits.StackBytes or
// Limits.CallDepth (wrapped in the call's error; the kind is KindStack).
var ErrStackLimit = errors.New("wasmhost: policy call stack limit exceeded")

// bulkNanosPerFuel is the time one fuel of a bulk instruction is assumed to
// take: a fuel is 16 bytes of memory.fill/copy/init (~8 GB/s, below what
// one core does) or 4 table elements. The host refuses a bulk instruction
// whose charge alone would take the call past its deadline, before it runs.
const bulkNanosPerFuel = 2

// A charge is below 2^30 and fuel at most fuelQuantum before one, so the
// guest's i32 fuel cannot wrap from negative to positive as long as the
// quantum stays below 2^30 (this fails to compile otherwise).
const _ = uint32(1<<30 - fuelQuantum - bulkFuel)

// metering is how the host rewrites modules under l.
func metering(l Limits) wasmbin.Metering {
	m := wasmbin.Metering{
		Module:        ImportModule,
		Fuel:          importFuel,
		Bulk:          importBulk,
		Limit:         importLimit,
		BulkCost:      bulkFuel,
		StackBytes:    int32(l.StackBytes),
		TableElements: uint32(l.TableElements),
		FuelExport:    exportFuel,
	}
	if l.CallDepth > 0 {
		m.MinFrame = int32(l.StackBytes / int64(l.CallDepth))
	}
	return m
}

// instantiateHostModule adds the metastore host module (log and the
// metering imports) to rt.
func instantiateHostModule(ctx context.Context, rt wazero.Runtime) error {
	_, err := rt.NewHostModuleBuilder(ImportModule).
		NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(hostLog), []api.ValueType{i32, i32, i32}, nil).Export(ImportLog).
		NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(hostFuel), nil, []api.ValueType{i32}).Export(importFuel).
		NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(hostBulk), []api.ValueType{i32}, []api.ValueType{i32}).Export(importBulk).
		NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(hostLimit), []api.ValueType{i32}, nil).Export(importLimit).
		Instantiate(ctx)
	return err
}

// hostBulk is called before a bulk instruction whose size charge left the
// guest's fuel at stack[0] <= 0. Memory and table bulk instructions run in
// native code with no check-in inside, so a 256 MiB memory.fill cannot be
// stopped once started: the host refuses it up front when its debt, at
// bulkNanosPerFuel, would end past the deadline.
func hostBulk(ctx context.Context, _ api.Module, stack []uint64) {
	inst, _ := ctx.Value(instanceKey{}).(*instance)
	if inst == nil {
		panic(errNoInstance) // as hostFuel: no deadline to honour
	}
	debt := -int64(int32(stack[0]))
	// The quantum spent plus the debt count against the fuel budget, and
	// the deadline is checked as at any check-in; then the debt itself must
	// fit in what is left of the deadline.
	inst.charge(fuelQuantum + debt)
	if inst.timeout > 0 && monotonic()-inst.callStart+debt*bulkNanosPerFuel > inst.timeout {
		inst.timedOut = true
		panic(errDeadline)
	}
	stack[0] = fuelQuantum
}

// hostLimit is called when a guest reaches a limit: the stack (the call
// fails) or a table's size (table.grow then returns -1; the kind is kept in
// case the call fails because of it).
func hostLimit(ctx context.Context, _ api.Module, stack []uint64) {
	inst, _ := ctx.Value(instanceKey{}).(*instance)
	switch int32(stack[0]) {
	case wasmbin.LimitTable:
		if inst != nil {
			inst.limitHit = KindTable
		}
	default:
		if inst != nil {
			inst.limitHit = KindStack
		}
		panic(ErrStackLimit)
	}
}

// checkStructure refuses a module over a structural limit; in is the module
// as submitted. Each message names the limit's configuration key.
func checkStructure(in *wasmbin.Info, l Limits) error {
	var errs []error
	over := func(what string, n uint64, limit int64, key string) {
		if n > uint64(limit) {
			errs = append(errs, fmt.Errorf("%s %d is over the limit of %d (limits.%s)", what, n, limit, key))
		}
	}
	over("code section size", uint64(in.CodeBytes), l.CodeBytes, "code_size")
	over("function count", uint64(in.Funcs()), int64(l.Functions), "functions")
	over("global count", uint64(in.Globals), int64(l.Globals), "globals")
	over("locals of one function", in.MaxLocals, int64(l.LocalsPerFunction), "locals_per_function")
	over("locals of all functions", in.TotalLocals, l.Locals, "locals")
	over("largest function body", uint64(in.MaxBody), int64(l.FunctionBytes), "function_bytes")
	over("table count", uint64(len(in.Tables)), int64(l.Tables), "tables")
	for i, t := range in.Tables {
		over(fmt.Sprintf("table %d size", i), uint64(t.Min), int64(l.TableElements), "table_elements")
	}
	return errors.Join(errs...)
}

// checkControl refuses a module whose compilation would cost more than
// the limits allow (see wasmbin.Control); ctl is of the metered module.
func checkControl(ctl wasmbin.Control, l Limits) error {
	var errs []error
	if ctl.MaxBlocks > uint64(l.BlocksPerFunction) {
		errs = append(errs, fmt.Errorf("function %d has %d blocks once metered, over the limit of %d (limits.blocks_per_function)",
			ctl.Func, ctl.MaxBlocks, l.BlocksPerFunction))
	}
	if ctl.Cost > uint64(l.CompileCost) {
		errs = append(errs, fmt.Errorf("compile cost %d (blocks² + blocks × locals² / 16, summed over functions, once metered) is over the limit of %d (limits.compile_cost)",
			ctl.Cost, l.CompileCost))
	}
	return errors.Join(errs...)
}

// validate compiles the module as submitted on a throw-away interpreter
// runtime: wazero validates while compiling, and the interpreter's
// compilation is the cheapest there is (no native code; ~90 ms for a 3 MB Go
// policy, against ~1.5 s for the compiler). Nothing that is not a valid
// module as submitted may be rewritten, compiled or run: an out-of-range
// index that the rewriting would make valid could reach the host's own
// state (e.g. the fuel counter).
//
// A module once accepted (by digest and memory limit) is remembered, in
// memory and, with a cache directory, on disk next to the compiled code,
// so that a reload or a restart from the compilation cache does not pay
// for it again.
func (h *Host) validate(ctx context.Context, bin []byte, digest string, pages uint32) error {
	key := fmt.Sprintf("validated-%s-%d-wazero-%s", digest, pages, validatorVersion())
	if _, ok := h.validated.Load(key); ok {
		return nil
	}
	if h.cacheDir != "" && trustedMark(filepath.Join(h.cacheDir, key), key) {
		h.validated.Store(key, struct{}{})
		return nil
	}
	if err := validate(ctx, bin, pages); err != nil {
		return err
	}
	h.validated.Store(key, struct{}{})
	if h.cacheDir != "" {
		// Best effort: without the mark the next start validates again.
		writeMark(h.cacheDir, filepath.Join(h.cacheDir, key), key)
	}
	return nil
}

// errValidatorPanic: wazero v1.12's validator panics on some invalid
// modules (e.g. a function whose type index is out of range; found by
// FuzzParseAndMeter). Such a module is refused, never loaded.
var errValidatorPanic = errors.New("the validator failed on it")

func validate(ctx context.Context, bin []byte, pages uint32) (err error) {
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter().WithMemoryLimitPages(pages))
	defer rt.Close(ctx)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("invalid module: %w (%v)", errValidatorPanic, r)
		}
	}()
	if _, err := rt.CompileModule(ctx, bin); err != nil {
		return fmt.Errorf("invalid module: %w", err)
	}
	return nil
}
