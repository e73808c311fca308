package wasmtest

import (
	"github.com/metastore-dev/metastore/wasmhost/internal/wasmbin"
)

// FirstFunc is the index of Spec.Funcs[0] in a module with an Authorize
// hook only and no import: marker, buffer, init, authorize, reason,
// mutation come first.
const FirstFunc = 6

// Pages a "big memory" fixture grows its memory to in policy_init (256 MiB
// in all), so that its hooks can run bulk instructions over 256 MiB.
const BigPages = 4096

var (
	unreachable = []byte{0x00}
	refNullFunc = []byte{0xd0, 0x70}
)

func tableGrow(t uint32) []byte { return wasmbin.AppendU32([]byte{0xfc, 15}, t) }

func memFill() []byte { return []byte{0xfc, 11, 0x00} }

func memCopy() []byte { return []byte{0xfc, 10, 0x00, 0x00} }

// growInit is a policy_init that grows memory to BigPages and returns 0.
func growInit() []byte {
	return wasmbin.Code(wasmbin.I32Const(BigPages-2), []byte{0x40, 0x00, 0x1a}, wasmbin.I32Const(0), end)
}

// limitModules are the hostile guests of the resource limits: each is an
// attack class of its own (see wasmhost's limits tests for what must hold).
func limitModules() map[string][]byte {
	loopForever := []byte{0x03, 0x40, 0x0c, 0x00, 0x0b}
	// f(n) = f(n+1): recursion without end.
	deep := wasmbin.Code([]byte{0x20, 0x00}, wasmbin.I32Const(1), []byte{0x6a}, call(FirstFunc), end)
	// The same with 1000 i64 operands live across the call: a wide frame.
	var wide []byte
	for i := 0; i < 1000; i++ {
		wide = append(wide, wasmbin.I64Const(int64(i))...)
	}
	wide = append(wide, deep[:len(deep)-1]...)
	for i := 0; i < 1000; i++ {
		wide = append(wide, 0x1a) // drop
	}
	wide = append(wide, end...)
	// g(n) = n > 0 ? g(n-1) : (), entered with 1000: legitimate recursion.
	bounded := wasmbin.Code([]byte{0x20, 0x00, 0x04, 0x40},
		[]byte{0x20, 0x00}, wasmbin.I32Const(1), []byte{0x6b}, call(FirstFunc), end, end)
	callFirst := func(arg int32) []byte {
		return wasmbin.Code(wasmbin.I32Const(arg), call(FirstFunc), wasmbin.I32Const(1), end)
	}
	// table.grow by n; trap when it fails.
	growOrTrap := func(n int32) []byte {
		return wasmbin.Code(refNullFunc, wasmbin.I32Const(n), tableGrow(0),
			wasmbin.I32Const(-1), []byte{0x46, 0x04, 0x40}, unreachable, end, // i32.eq; if unreachable end
			wasmbin.I32Const(1), end)
	}
	// Grow by 1 GiB of table (2^27 elements) a step until it fails, then trap.
	growSteps := wasmbin.Code([]byte{0x03, 0x40}, refNullFunc, wasmbin.I32Const(1<<27), tableGrow(0),
		wasmbin.I32Const(-1), []byte{0x47, 0x0d, 0x00, 0x0b}, unreachable, end)
	const big = (BigPages - 2) << 16 // bytes past the first two pages
	fillLoop := func(n int32) []byte {
		return wasmbin.Code([]byte{0x03, 0x40}, wasmbin.I32Const(0), wasmbin.I32Const(0x55), wasmbin.I32Const(n), memFill(),
			[]byte{0x0c, 0x00, 0x0b}, wasmbin.I32Const(1), end)
	}
	// table.fill of a whole 100,000-entry table, forever.
	tableFillLoop := wasmbin.Code([]byte{0x03, 0x40}, wasmbin.I32Const(0), refNullFunc, wasmbin.I32Const(100_000),
		[]byte{0xfc, 17, 0x00, 0x0c, 0x00, 0x0b}, wasmbin.I32Const(1), end)
	copyLoop := wasmbin.Code([]byte{0x03, 0x40}, wasmbin.I32Const(0), wasmbin.I32Const(big/2), wasmbin.I32Const(big/2), memCopy(),
		[]byte{0x0c, 0x00, 0x0b}, wasmbin.I32Const(1), end)
	// Invalid as submitted, valid after metering: global 0 and 1 would be
	// the host's fuel and stack counters, local 2 of policy_authorize its
	// scratch local, type index 9 (one past the module's) its check type.
	oobGlobal := func(g byte) []byte {
		return wasmbin.Code(wasmbin.I32Const(0x7fffffff), []byte{0x24, g}, loopForever, wasmbin.I32Const(1), end)
	}
	oobLocal := wasmbin.Code(wasmbin.I32Const(0), wasmbin.I32Const(0), wasmbin.I32Const(16), memFill(), []byte{0x20, 0x02}, end)

	mods := map[string][]byte{
		"oob-global":       Build(Spec{Authorize: oobGlobal(0)}),
		"oob-global-stack": Build(Spec{Authorize: oobGlobal(1), Funcs: [][]byte{deep}}),
		"oob-local":        Build(Spec{Authorize: oobLocal}),

		"table-grow-huge":     Build(Spec{Authorize: growOrTrap(-0x40000000), Table: &[2]int64{1, -1}}), // 3Gi elements: 24 GiB
		"table-grow-steps":    Build(Spec{Authorize: growSteps, Table: &[2]int64{1, -1}}),
		"table-declared-huge": Build(Spec{Authorize: Return(1), Table: &[2]int64{50_000_000, -1}}),
		"table-grow-ok":       Build(Spec{Authorize: growOrTrap(1000), Table: &[2]int64{1, -1}}),
		"table-fill-loop":     Build(Spec{Authorize: tableFillLoop, Table: &[2]int64{100_000, -1}}),

		"deep-recursion":       Build(Spec{Authorize: callFirst(0), Funcs: [][]byte{deep}}),
		"huge-frame-recursion": Build(Spec{Authorize: callFirst(0), Funcs: [][]byte{wide}}),
		"recursion-ok":         Build(Spec{Authorize: callFirst(1000), Funcs: [][]byte{bounded}}),

		"fill-loop":       Build(Spec{Authorize: fillLoop(big), Init: growInit()}),
		"fill-loop-1mib":  Build(Spec{Authorize: fillLoop(1 << 20), Init: growInit()}),
		"copy-loop":       Build(Spec{Authorize: copyLoop, Init: growInit()}),
		"grow-in-call":    Build(Spec{Authorize: wasmbin.Code(wasmbin.I32Const(BigPages-2), []byte{0x40, 0x00, 0x1a}, loopForever, wasmbin.I32Const(1), end)}),
		"many-functions":  manyFunctions(100_000),
		"oob-block-type":  oobBlockType(),
		"huge-vector":     hugeVector(),
		"fill-small-once": Build(Spec{Authorize: wasmbin.Code(wasmbin.I32Const(0), wasmbin.I32Const(0), wasmbin.I32Const(4096), memFill(), wasmbin.I32Const(1), end)}),
	}
	return mods
}

// manyFunctions is an allowing policy with n extra empty functions.
func manyFunctions(n int) []byte {
	funcs := make([][]byte, n)
	for i := range funcs {
		funcs[i] = end
	}
	return Build(Spec{Authorize: Return(1), Funcs: funcs})
}

// oobBlockType is an allowing policy whose policy_authorize opens a block of
// type index len(types): out of range as submitted; after metering it would
// be the host's () -> i32 check type and the block would yield the verdict.
func oobBlockType() []byte {
	probe := Build(Spec{Authorize: Return(1)})
	m, err := wasmbin.Parse(probe)
	if err != nil {
		panic(err)
	}
	info, err := wasmbin.Inspect(m)
	if err != nil {
		panic(err)
	}
	n := len(info.Types)
	body := wasmbin.Code([]byte{0x02}, wasmbin.AppendS64(nil, int64(n)), wasmbin.I32Const(1), end, end)
	return Build(Spec{Authorize: body})
}

// hugeVector is an allowing policy whose export section claims 2^32-1
// exports in a few bytes: wazero v1.12's decoder would make a slice and a
// map of that size before reading the first.
func hugeVector() []byte {
	m, err := wasmbin.Parse(Build(Spec{Authorize: Return(1)}))
	if err != nil {
		panic(err)
	}
	for i := range m.Sections {
		if m.Sections[i].ID == wasmbin.SecExport {
			m.Sections[i].Payload = append(wasmbin.AppendU32(nil, 1<<32-1), m.Sections[i].Payload[1:]...)
		}
	}
	return m.Encode()
}
