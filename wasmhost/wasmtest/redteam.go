package wasmtest

import (
	"github.com/metastore-dev/metastore/wasmhost/internal/wasmbin"
)

// Red-team fixtures: guests whose work between two fuel check-ins is not
// one loop iteration or one call but a long straight-line stretch, a call
// to a long function, or many host calls; and compile-time bombs.

// storeLoad is i32.store(0, i32.load(0)): 4 instructions, 10 bytes, that no
// compiler can drop.
var storeLoad = []byte{0x41, 0x00, 0x41, 0x00, 0x28, 0x02, 0x00, 0x36, 0x02, 0x00}

func repeat(b []byte, n int) []byte {
	out := make([]byte, 0, len(b)*n)
	for range n {
		out = append(out, b...)
	}
	return out
}

// WideBody is the number of storeLoad repetitions in the wide fixtures:
// 400,000 instructions in 1 MB of code.
const WideBody = 100_000

func redteamModules() map[string][]byte {
	straight := repeat(storeLoad, WideBody)
	// loop { 400k instructions; br 0 }
	wideLoop := wasmbin.Code([]byte{0x03, 0x40}, straight, []byte{0x0c, 0x00, 0x0b}, wasmbin.I32Const(1), end)
	// The same loop wrapped in a block: no split point at the loop's own
	// level.
	wideLoopBlock := wasmbin.Code([]byte{0x03, 0x40, 0x02, 0x40}, straight, []byte{0x0b, 0x0c, 0x00, 0x0b}, wasmbin.I32Const(1), end)
	// loop { 50k calls of sched_yield; br 0 }
	hostCalls := wasmbin.Code([]byte{0x03, 0x40}, repeat([]byte{0x10, 0x00, 0x1a}, WideBody/2), []byte{0x0c, 0x00, 0x0b},
		wasmbin.I32Const(1), end)
	// loop { metastore.log(0, 0, 4096) × 1000; br 0 }
	logCall := wasmbin.Code(wasmbin.I32Const(0), wasmbin.I32Const(0), wasmbin.I32Const(4096), []byte{0x10, 0x00})
	logFlood := wasmbin.Code([]byte{0x03, 0x40}, repeat(logCall, 1000), []byte{0x0c, 0x00, 0x0b}, wasmbin.I32Const(1), end)
	// loop { leaf() } where the leaf is 400k straight-line instructions:
	// the leaf has no call, so it is not checked on entry.
	leafLoop := wasmbin.Code([]byte{0x03, 0x40}, wasmbin.I32Const(0), call(FirstFunc), []byte{0x0c, 0x00, 0x0b},
		wasmbin.I32Const(1), end)
	leaf := wasmbin.Code(straight, end)
	// No loop at all: f3 calls f2 1000 times, f2 calls f1 1000 times, f1
	// calls the leaf f0 (4,000 instructions) 1000 times: 4·10^12
	// instructions behind 10^6 function entries.
	small := wasmbin.Code(repeat(storeLoad, 1000), end)
	fan := func(callee uint32) []byte {
		return wasmbin.Code(repeat(wasmbin.Code(wasmbin.I32Const(0), call(callee)), 1000), end)
	}
	fanout := wasmbin.Code(wasmbin.I32Const(0), call(FirstFunc+3), wasmbin.I32Const(1), end)
	// Within the default function_bytes: 80,000 instructions a loop
	// iteration, and a 80,000-instruction leaf called in a loop.
	smallBody := repeat(storeLoad, WideBody/5)
	smallLoop := wasmbin.Code([]byte{0x03, 0x40}, smallBody, []byte{0x0c, 0x00, 0x0b}, wasmbin.I32Const(1), end)
	return map[string][]byte{
		"wide-loop-small": Build(Spec{Authorize: smallLoop, Admit: smallLoop}),
		"leaf-loop-small": Build(Spec{Authorize: leafLoop, Funcs: [][]byte{wasmbin.Code(smallBody, end)}}),
		"wide-loop":       Build(Spec{Authorize: wideLoop, Admit: wideLoop}),
		"wide-loop-block": Build(Spec{Authorize: wideLoopBlock}),
		"wide-hostcalls":  Build(Spec{Authorize: hostCalls, Imports: []FuncImport{{Module: "wasi_snapshot_preview1", Name: "sched_yield", Results: []byte{i32}}}}),
		"log-flood": Build(Spec{Authorize: logFlood, Imports: []FuncImport{{Module: "metastore", Name: "log",
			Params: []byte{i32, i32, i32}}}}),
		"leaf-loop":     Build(Spec{Authorize: leafLoop, Funcs: [][]byte{leaf}}),
		"fanout-noloop": Build(Spec{Authorize: fanout, Funcs: [][]byte{small, fan(FirstFunc), fan(FirstFunc + 1), fan(FirstFunc + 2)}}),
	}
}

// DeepTxn is a TxnRequest of levels txns nested in each other's success
// branch (RequestOp.request_txn in TxnRequest.success), with a put at the
// bottom: about 6 bytes a level.
func DeepTxn(levels int, key string) []byte {
	inner := PutMsg(key, "v")
	inner = opPut(inner) // a RequestOp
	// sizes[i] is the size of the TxnRequest at nesting i from the bottom.
	sizes := make([]int, levels+1)
	sizes[0] = 1 + uvarintLen(len(inner)) + len(inner)
	for i := 1; i <= levels; i++ {
		op := 1 + uvarintLen(sizes[i-1]) + sizes[i-1] // RequestOp{request_txn}
		sizes[i] = 1 + uvarintLen(op) + op            // TxnRequest{success}
	}
	out := make([]byte, 0, sizes[levels])
	for i := levels; i >= 1; i-- {
		op := 1 + uvarintLen(sizes[i-1]) + sizes[i-1]
		out = wasmbin.AppendU32(append(out, 2<<3|2), uint32(op))
		out = wasmbin.AppendU32(append(out, 4<<3|2), uint32(sizes[i-1]))
	}
	out = wasmbin.AppendU32(append(out, 2<<3|2), uint32(len(inner)))
	return append(out, inner...)
}

func uvarintLen(n int) int {
	l := 1
	for n >= 0x80 {
		n >>= 7
		l++
	}
	return l
}

// Compile-time bombs: modules within every structural limit whose
// validation or compilation might cost far more than their size.
func compileBombs() map[string][]byte {
	// 1M nested blocks in one function (3 MB of code).
	const nest = 1_000_000
	nested := wasmbin.Code(repeat([]byte{0x02, 0x40}, nest), repeat([]byte{0x0b}, nest), wasmbin.I32Const(1), end)
	// One br_table with 4M targets (about 16 MB of code at 4 bytes each
	// is over the code limit; 3M at 3 bytes).
	const targets = 3_000_000
	brt := wasmbin.Code([]byte{0x02, 0x40}, wasmbin.I32Const(0), []byte{0x0e}, wasmbin.AppendU32(nil, targets),
		repeat([]byte{0x00}, targets), []byte{0x00, 0x0b}, wasmbin.I32Const(1), end)
	// 19,990 functions of 10,000 i64 locals each (the per-function limit)
	// and one local.get: 2·10^8 locals in 200 KB.
	const nf = 19_990
	funcs := make([][]byte, nf)
	locals := make([][]byte, nf)
	for i := range funcs {
		funcs[i] = []byte{0x20, 0x00, 0x1a, 0x0b}
		locals[i] = append(wasmbin.AppendU32([]byte{1}, 9_999), wasmbin.I64)
	}
	// 1M instructions of one function with a 1000-deep operand stack.
	var deepStack []byte
	deepStack = append(deepStack, repeat(wasmbin.I32Const(1), 1000)...)
	deepStack = append(deepStack, repeat([]byte{0x6a}, 999)...)
	deepStack = append(deepStack, 0x1a)
	wideFuncs := make([][]byte, 64)
	wide := wasmbin.Code(repeat(storeLoad, 25_000), end)
	for i := range wideFuncs {
		wideFuncs[i] = wide
	}
	// 6,000 ifs in a row (30 KB): measured 0.5 s at 5,000 and 2.1 s at
	// 10,000, quadratic.
	ifs := wasmbin.Code(repeat([]byte{0x41, 0x00, 0x04, 0x40, 0x0b}, 6_000), wasmbin.I32Const(1), end)
	// 600 ifs, then reads of 3,000 locals (a phi for each at each join):
	// seconds (500 ifs over 2,000 locals took 1.9 s).
	ifLocals := repeat([]byte{0x41, 0x00, 0x04, 0x40, 0x0b}, 600)
	for i := range 3000 {
		ifLocals = append(ifLocals, wasmbin.AppendU32([]byte{0x20}, uint32(i+1))...)
		ifLocals = append(ifLocals, 0x1a)
	}
	ifLocals = append(ifLocals, 0x0b)
	return map[string][]byte{
		"bomb-ifs":           Build(Spec{Authorize: ifs}),
		"bomb-if-locals":     Build(Spec{Authorize: Return(1), Funcs: [][]byte{ifLocals}, FuncLocals: [][]byte{append(wasmbin.AppendU32([]byte{1}, 3000), wasmbin.I64)}}),
		"bomb-nested-blocks": Build(Spec{Authorize: nested}),
		"bomb-br-table":      Build(Spec{Authorize: brt}),
		"bomb-many-locals":   Build(Spec{Authorize: Return(1), Funcs: funcs, FuncLocals: locals}),
		"bomb-stack-height":  Build(Spec{Authorize: wasmbin.Code(repeat(deepStack, 500), wasmbin.I32Const(1), end)}),
		"bomb-wide-loop":     Build(Spec{Authorize: Return(1), Funcs: [][]byte{wasmbin.Code([]byte{0x03, 0x40}, repeat(storeLoad, 1_500_000), []byte{0x0b, 0x0b})}}),
		// 64 functions of 250 KB each (16 MB of code, under every limit).
		"bomb-wide-functions": Build(Spec{Authorize: Return(1), Funcs: wideFuncs}),
	}
}

// featureModules use proposals the host leaves off (wazero's CoreFeaturesV2
// has no threads, tail calls or exceptions): a shared memory whose
// memory.atomic.wait32 would block the thread for ever, a return_call
// loop. Each must be refused by the validator.
func featureModules() map[string][]byte {
	wait := wasmbin.Code(wasmbin.I32Const(0), wasmbin.I32Const(0), wasmbin.I64Const(-1),
		[]byte{0xfe, 0x01, 0x02, 0x00}, end) // memory.atomic.wait32
	m, err := wasmbin.Parse(Build(Spec{Authorize: wait, MaxPages: 16}))
	if err != nil {
		panic(err)
	}
	for i := range m.Sections {
		if m.Sections[i].ID == wasmbin.SecMemory {
			m.Sections[i].Payload[1] = 0x03 // shared, with a maximum
		}
	}
	tail := wasmbin.Code(wasmbin.I32Const(0), wasmbin.I32Const(0), []byte{0x12}, wasmbin.AppendU32(nil, FirstFunc-3), end)
	return map[string][]byte{
		"shared-memory-wait": m.Encode(),
		"tail-call-loop":     Build(Spec{Authorize: tail}),
	}
}
