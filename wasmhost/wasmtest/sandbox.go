package wasmtest

import (
	"github.com/metastore-dev/metastore/wasmhost/internal/wasmbin"
)

// Page1 is where the sandbox fixtures keep their own data (page 0 holds
// the reason, the mutation and the request buffer).
const Page1 = 65536

// withStart inserts a start section naming function idx into a module
// (after the export section, as the binary format orders sections).
func withStart(bin []byte, idx uint32) []byte {
	m, err := wasmbin.Parse(bin)
	if err != nil {
		panic(err)
	}
	at := len(m.Sections)
	for i, s := range m.Sections {
		if s.ID != wasmbin.SecCustom && s.ID > wasmbin.SecStart {
			at = i
			break
		}
	}
	start := wasmbin.Section{ID: wasmbin.SecStart, Payload: wasmbin.AppendU32(nil, idx)}
	m.Sections = append(m.Sections[:at], append([]wasmbin.Section{start}, m.Sections[at:]...)...)
	return m.Encode()
}

var (
	forever  = []byte{0x03, 0x40, 0x0c, 0x00, 0x0b} // loop br 0 end
	growMiB  = wasmbin.Code(wasmbin.I32Const(16), []byte{0x40, 0x00, 0x1a})
	drop     = []byte{0x1a}
	wasiFunc = func(name string, params int) FuncImport {
		p := make([]byte, params)
		for i := range p {
			p[i] = i32
		}
		return FuncImport{Module: "wasi_snapshot_preview1", Name: name, Params: p, Results: []byte{i32}}
	}
)

// hostLoop is a hook body that calls import 0 with args forever.
func hostLoop(args ...int32) []byte {
	body := wasmbin.Code(growMiB, []byte{0x03, 0x40})
	for _, a := range args {
		body = append(body, wasmbin.I32Const(a)...)
	}
	return wasmbin.Code(body, call(0), drop, []byte{0x0c, 0x00, 0x0b}, wasmbin.I32Const(1), end)
}

// protobuf encoding, enough for the mutation fixtures.
func field(num int, b []byte) []byte {
	out := wasmbin.AppendU32([]byte{byte(num<<3 | 2)}, uint32(len(b)))
	return append(out, b...)
}

func cat(parts ...[]byte) []byte { return wasmbin.Code(parts...) }

// PutMsg and the others build the etcd messages a mutation returns.
func PutMsg(key, value string) []byte  { return cat(field(1, []byte(key)), field(2, []byte(value))) }
func deleteMsg(key, end string) []byte { return cat(field(1, []byte(key)), field(2, []byte(end))) }
func opPut(put []byte) []byte          { return field(2, put) }
func opDelete(del []byte) []byte       { return field(3, del) }
func opTxn(txn []byte) []byte          { return field(4, txn) }

// Mutations are the replacement messages of the lane fixtures, by fixture
// name; the tests match those policies on "/t/".
var Mutations = map[string][]byte{
	// A Put moved to another tenant's prefix.
	"mutate-escape-put": PutMsg("/u/x", "v"),
	// Put-shaped: as a DeleteRange it reads [/t/a, "\xff"), every key
	// from /t/a on, other tenants' included.
	"mutate-as-delete": PutMsg("/t/a", "\xff"),
	// Put-shaped with ignore_value (field 5), which a DeleteRange does not
	// have: as a DeleteRange it stays under /t/, but it is not one.
	"mutate-put-fields": cat(PutMsg("/t/a", "/t/b"), []byte{5<<3 | 0, 1}),
	// A Txn whose nested txn writes outside /t/.
	"mutate-txn-nested": field(2, opTxn(field(2, opPut(PutMsg("/u/x", "v"))))),
	// A Txn whose failure branch deletes every key from /t/ on.
	"mutate-txn-delete": field(3, opDelete(deleteMsg("/t/", "\x00"))),
	// The control: a Put that stays under /t/.
	"mutate-in-lane": PutMsg("/t/stamped", "ok"),
}

// sandboxModules are the fixtures of the host's own limits: start and init
// functions that never return, host calls whose work grows with an
// argument, unusable reasons, and mutations that leave their lane.
func sandboxModules() map[string][]byte {
	mods := map[string][]byte{
		// Start and init never return.
		"start-loop":  Build(Spec{Authorize: Return(1), Start: wasmbin.Code(forever, end)}),
		"initrt-loop": Build(Spec{Authorize: Return(1), InitRT: wasmbin.Code(forever, end)}),
		// A start function spinning on host calls (1 MiB random_get).
		"start-random": Build(Spec{Authorize: Return(1), Imports: []FuncImport{wasiFunc("random_get", 2)},
			Start: wasmbin.Code(growMiB, []byte{0x03, 0x40}, wasmbin.I32Const(Page1), wasmbin.I32Const(1<<20),
				call(0), drop, []byte{0x0c, 0x00, 0x0b}, end)}),

		// Host calls whose work grows with an argument, in a loop.
		"random-loop": Build(Spec{Authorize: hostLoop(Page1, 1<<20), Admit: hostLoop(Page1, 1<<20),
			Imports: []FuncImport{wasiFunc("random_get", 2)}}),
		// fd_write of 131,072 empty iovecs to stderr per call.
		"fdwrite-iovecs": Build(Spec{Authorize: hostLoop(2, Page1, 1<<17, 0), Admit: hostLoop(2, Page1, 1<<17, 0),
			Imports: []FuncImport{wasiFunc("fd_write", 4)}}),
		// fd_write of 1,000 iovecs of 1 MiB each to stderr per call.
		"fdwrite-stderr": Build(Spec{Authorize: hostLoop(2, Page1, 1000, 0), Admit: hostLoop(2, Page1, 1000, 0),
			Imports: []FuncImport{wasiFunc("fd_write", 4)}, Data: []DataAt{{Page1, iovecs(1000, 2*Page1, 1<<20-Page1)}}}),
		// poll_oneoff with 21,000 clock subscriptions per call.
		"poll-subs": Build(Spec{Authorize: hostLoop(Page1, Page1, 21000, 0), Admit: hostLoop(Page1, Page1, 21000, 0),
			Imports: []FuncImport{wasiFunc("poll_oneoff", 4)}}),

		// A DENY with a reason that cannot be used.
		"reason-empty":    Build(Spec{Authorize: Return(0), Admit: Return(0), Reason: wasmbin.Code(wasmbin.I64Const(packed(reasonAt, 0)), end)}),
		"reason-trap":     Build(Spec{Authorize: Return(0), Admit: Return(0), Reason: wasmbin.Code([]byte{0x00}, end)}),
		"reason-loop":     Build(Spec{Authorize: Return(0), Admit: Return(0), Reason: wasmbin.Code(forever, wasmbin.I64Const(0), end)}),
		"reason-not-utf8": Build(Spec{Authorize: Return(0), Admit: Return(0), Reason: wasmbin.Code(wasmbin.I64Const(packed(Page1, 2)), end), Data: []DataAt{{Page1, []byte{0xff, 0xfe}}}}),
		"reason-huge":     Build(Spec{Authorize: Return(0), Admit: Return(0), Reason: wasmbin.Code(wasmbin.I64Const(packed(0, 1<<30)), end)}),
	}
	for name, msg := range Mutations {
		mods[name] = Build(Spec{Admit: Return(3), Mutation: wasmbin.Code(wasmbin.I64Const(packed(Page1, len(msg))), end),
			Data: []DataAt{{Page1, msg}}})
	}
	return mods
}

// iovecs encodes n iovecs of (ptr, length).
func iovecs(n int, ptr, length uint32) []byte {
	out := make([]byte, 0, 8*n)
	for range n {
		out = append(out, byte(ptr), byte(ptr>>8), byte(ptr>>16), byte(ptr>>24),
			byte(length), byte(length>>8), byte(length>>16), byte(length>>24))
	}
	return out
}
