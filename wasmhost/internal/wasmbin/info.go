package wasmbin

import (
	"errors"
	"fmt"
)

// FuncType is a function signature: value type bytes of params and results.
type FuncType struct {
	Params, Results []byte
}

// Table is one declared table.
type Table struct {
	Min, Max uint32
	HasMax   bool
}

// Info is what the host needs to know about a module to check its
// structural limits and to rewrite it: the index spaces the rewriter extends
// (types, functions, globals, locals) and the sizes a module can make the
// host allocate.
type Info struct {
	Types           []FuncType
	ImportedFuncs   uint32
	FuncTypes       []uint32 // type index of every function, imports first
	ImportedGlobals uint32
	Globals         uint32 // imported and defined
	Tables          []Table
	ImportedTables  uint32
	CodeBytes       int
	// Locals is the number of locals (params included) of each defined
	// function; MaxLocals the largest.
	Locals    []uint64
	MaxLocals uint64
	// TotalLocals sums Locals; MaxBody is the largest body in bytes. The
	// compiler's memory grows with both (see wasmhost's limits).
	TotalLocals uint64
	MaxBody     int
	// DataBytes is the sum of the data segments' sizes.
	DataBytes    uint64
	DataSegments uint32
	// ElemEntries is the sum of the element segments' lengths.
	ElemEntries uint64
}

// Funcs is the size of the function index space.
func (in *Info) Funcs() uint32 { return uint32(len(in.FuncTypes)) }

// Inspect decodes the parts of m that Info describes. It does not validate
// the module (wazero does), but never trusts a count: every read is bounds
// checked, so hostile input yields an error, not a huge allocation.
//
// It also refuses every vector whose count is larger than the bytes left,
// in every section wazero's decoder sizes an allocation by (the vectors of
// the known sections, element segments and the name section): wazero v1.12
// makes a slice or map of the claimed count before reading it, so an
// 8-byte export section claiming 2^32 exports would take the process down
// in the validator itself. A module Inspect refuses never reaches wazero.
func Inspect(m *Module) (*Info, error) {
	if err := checkCounts(m); err != nil {
		return nil, err
	}
	in := &Info{}
	if s := m.Section(SecType); s != nil {
		r := &reader{b: s.Payload}
		n := r.u32()
		for i := uint32(0); i < n && r.err == nil; i++ {
			if form := r.byte(); form != 0x60 && r.err == nil {
				return nil, fmt.Errorf("type %d: unsupported type form 0x%02x", i, form)
			}
			var t FuncType
			t.Params = r.bytes(int(r.u32()))
			t.Results = r.bytes(int(r.u32()))
			in.Types = append(in.Types, t)
		}
		if r.err != nil {
			return nil, fmt.Errorf("type section: %w", r.err)
		}
	}
	if s := m.Section(SecImport); s != nil {
		r := &reader{b: s.Payload}
		n := r.u32()
		for i := uint32(0); i < n && r.err == nil; i++ {
			r.name()
			r.name()
			switch kind := r.byte(); kind {
			case KindFunc:
				in.FuncTypes = append(in.FuncTypes, r.u32())
				in.ImportedFuncs++
			case KindTable:
				r.byte()
				in.Tables = append(in.Tables, readLimits(r))
				in.ImportedTables++
			case KindMemory:
				skipLimits(r)
			case KindGlobal:
				r.byte()
				r.byte()
				in.ImportedGlobals++
			case KindTag:
				r.byte()
				r.u32()
			default:
				r.fail(fmt.Errorf("import %d: unknown kind %d", i, kind))
			}
		}
		if r.err != nil {
			return nil, fmt.Errorf("import section: %w", r.err)
		}
	}
	in.Globals = in.ImportedGlobals
	if s := m.Section(SecFunction); s != nil {
		r := &reader{b: s.Payload}
		n := r.u32()
		for i := uint32(0); i < n && r.err == nil; i++ {
			in.FuncTypes = append(in.FuncTypes, r.u32())
		}
		if r.err != nil {
			return nil, fmt.Errorf("function section: %w", r.err)
		}
	}
	if s := m.Section(SecTable); s != nil {
		r := &reader{b: s.Payload}
		n := r.u32()
		for i := uint32(0); i < n && r.err == nil; i++ {
			r.byte() // reftype
			in.Tables = append(in.Tables, readLimits(r))
		}
		if r.err != nil {
			return nil, fmt.Errorf("table section: %w", r.err)
		}
	}
	if s := m.Section(SecGlobal); s != nil {
		r := &reader{b: s.Payload}
		n := r.u32()
		in.Globals += n
		if in.Globals < n {
			return nil, fmt.Errorf("global section: too many globals")
		}
	}
	for _, t := range in.FuncTypes {
		if t >= uint32(len(in.Types)) {
			return nil, fmt.Errorf("function type index %d out of range (%d types)", t, len(in.Types))
		}
	}
	if s := m.Section(SecCode); s != nil {
		in.CodeBytes = len(s.Payload)
		r := &reader{b: s.Payload}
		n := r.u32()
		if uint64(in.ImportedFuncs)+uint64(n) != uint64(len(in.FuncTypes)) {
			return nil, fmt.Errorf("code section has %d bodies for %d functions", n, len(in.FuncTypes)-int(in.ImportedFuncs))
		}
		for i := uint32(0); i < n && r.err == nil; i++ {
			body := r.bytes(int(r.u32()))
			br := &reader{b: body}
			locals := uint64(len(in.Types[in.FuncTypes[in.ImportedFuncs+i]].Params))
			groups := br.u32()
			for g := uint32(0); g < groups && br.err == nil; g++ {
				locals += uint64(br.u32())
				br.byte()
			}
			if br.err != nil {
				return nil, fmt.Errorf("function body %d: locals: %w", i, br.err)
			}
			in.Locals = append(in.Locals, locals)
			in.MaxLocals = max(in.MaxLocals, locals)
			in.TotalLocals = satAdd(in.TotalLocals, locals)
			in.MaxBody = max(in.MaxBody, len(body))
		}
		if r.err != nil {
			return nil, fmt.Errorf("code section: %w", r.err)
		}
	} else if len(in.FuncTypes) > int(in.ImportedFuncs) {
		return nil, fmt.Errorf("no code section for %d functions", len(in.FuncTypes)-int(in.ImportedFuncs))
	}
	if s := m.Section(SecData); s != nil {
		r := &reader{b: s.Payload}
		n := r.u32()
		in.DataSegments = n
		for i := uint32(0); i < n && r.err == nil; i++ {
			switch flags := r.u32(); flags {
			case 0:
				skipConstExpr(r)
			case 1:
			case 2:
				r.u32()
				skipConstExpr(r)
			default:
				r.fail(fmt.Errorf("data segment %d: bad flags %d", i, flags))
			}
			size := r.u32()
			r.bytes(int(size))
			in.DataBytes += uint64(size)
		}
		if r.err != nil {
			return nil, fmt.Errorf("data section: %w", r.err)
		}
	}
	if s := m.Section(SecElement); s != nil {
		r := &reader{b: s.Payload}
		n := r.u32()
		for i := uint32(0); i < n && r.err == nil; i++ {
			flags := r.u32()
			if flags > 7 {
				return nil, fmt.Errorf("element segment %d: bad flags %d", i, flags)
			}
			if flags == 2 || flags == 6 {
				r.u32()
			}
			if flags&1 == 0 {
				skipConstExpr(r)
			}
			if flags&3 != 0 {
				r.byte()
			}
			count := r.u32()
			in.ElemEntries += uint64(count)
			for j := uint32(0); j < count && r.err == nil; j++ {
				if flags&4 == 0 {
					r.u32()
				} else {
					skipConstExpr(r)
				}
			}
		}
		if r.err != nil {
			return nil, fmt.Errorf("element section: %w", r.err)
		}
	}
	return in, nil
}

func readLimits(r *reader) Table {
	flags := r.byte()
	t := Table{Min: r.u32()}
	if flags&1 != 0 {
		t.Max, t.HasMax = r.u32(), true
	}
	if flags&^1 != 0 && r.err == nil {
		r.fail(fmt.Errorf("unsupported limits flags 0x%02x", flags))
	}
	return t
}

func skipConstExpr(r *reader) {
	for !r.done() {
		op := r.byte()
		if err := skipImmediates(r, op); err != nil {
			r.fail(err)
			return
		}
		if op == 0x0b {
			return
		}
	}
	r.fail(errTruncated)
}

// blockArity returns the params and results of a block type.
func (in *Info) blockArity(bt int64) (params, results int, err error) {
	switch {
	case bt == -64: // 0x40: empty
		return 0, 0, nil
	case bt < 0: // a value type
		return 0, 1, nil
	case bt >= int64(len(in.Types)):
		return 0, 0, fmt.Errorf("block type %d out of range (%d types)", bt, len(in.Types))
	}
	t := in.Types[bt]
	return len(t.Params), len(t.Results), nil
}

var errCount = errors.New("vector longer than its section")

// count reads a vector's length and fails if the vector cannot fit in what
// is left (every element takes at least a byte).
func (r *reader) count() uint32 {
	n := r.u32()
	if r.err == nil && uint64(n) > uint64(len(r.b)-r.off) {
		r.fail(fmt.Errorf("%w: %d elements in %d bytes", errCount, n, len(r.b)-r.off))
		return 0
	}
	return n
}

// checkCounts checks the leading count of every known section, the
// nested vectors of element segments and the name section's maps.
func checkCounts(m *Module) error {
	for _, s := range m.Sections {
		r := &reader{b: s.Payload}
		switch s.ID {
		case SecType, SecImport, SecFunction, SecTable, SecMemory, SecGlobal, SecExport, SecCode, SecData, SecTag:
			r.count()
		case SecElement:
			n := r.count()
			for i := uint32(0); i < n && r.err == nil; i++ {
				flags := r.u32()
				if flags > 7 {
					r.fail(fmt.Errorf("element segment %d: bad flags %d", i, flags))
					break
				}
				if flags == 2 || flags == 6 {
					r.u32()
				}
				if flags&1 == 0 {
					skipConstExpr(r)
				}
				if flags&3 != 0 {
					r.byte()
				}
				k := r.count()
				for j := uint32(0); j < k && r.err == nil; j++ {
					if flags&4 == 0 {
						r.u32()
					} else {
						skipConstExpr(r)
					}
				}
			}
		case SecCustom:
			if s.Name == "name" {
				if err := checkNameCounts(s.Payload); err != nil {
					return fmt.Errorf("name section: %w", err)
				}
			}
			continue
		default:
			continue
		}
		if r.err != nil {
			return fmt.Errorf("section %d: %w", s.ID, r.err)
		}
	}
	return nil
}

// checkNameCounts fails a name section whose maps claim more entries than
// bytes. wazero ignores a malformed name section otherwise, so only counts
// matter here; the errors of the rest are wazero's to report or ignore.
func checkNameCounts(p []byte) error {
	r := &reader{b: p}
	for !r.done() {
		id := r.byte()
		sub := r.bytes(int(r.u32()))
		if r.err != nil {
			return nil
		}
		sr := &reader{b: sub}
		switch id {
		case 1:
			sr.count()
		case 2:
			n := sr.count()
			for i := uint32(0); i < n && sr.err == nil; i++ {
				sr.u32()
				k := sr.count()
				for j := uint32(0); j < k && sr.err == nil; j++ {
					sr.u32()
					sr.name()
				}
			}
		}
		if sr.err != nil && errors.Is(sr.err, errCount) {
			return sr.err
		}
	}
	return nil
}
