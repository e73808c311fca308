package wasmbin

// Builder assembles a small module from function bodies given as raw
// instruction bytes. The hostile-guest fixtures are written with it, so that
// no fixture is a hand-edited binary.
type Builder struct {
	types       [][2][]byte
	imports     []builtImport
	importFuncs uint32
	funcs       []builtFunc
	memory      *[3]uint32  // min, max, hasMax
	tables      [][3]uint32 // min, max, hasMax (funcref)
	globals     [][]byte
	exports     []Export
	data        []builtData
}

type builtImport struct {
	module, name string
	typ          uint32
}

type builtFunc struct {
	typ    uint32
	locals []byte
	code   []byte
}

type builtData struct {
	offset uint32
	bytes  []byte
}

// Type adds (or finds) a function type and returns its index.
func (b *Builder) Type(params, results []byte) uint32 {
	for i, t := range b.types {
		if string(t[0]) == string(params) && string(t[1]) == string(results) {
			return uint32(i)
		}
	}
	b.types = append(b.types, [2][]byte{params, results})
	return uint32(len(b.types) - 1)
}

// ImportFunc imports a function; every import must precede the first Func.
func (b *Builder) ImportFunc(module, name string, params, results []byte) uint32 {
	if len(b.funcs) > 0 {
		panic("wasmbin: ImportFunc after Func")
	}
	b.imports = append(b.imports, builtImport{module, name, b.Type(params, results)})
	b.importFuncs++
	return b.importFuncs - 1
}

// Func adds a function. code is its instruction sequence including the
// final end (0x0b); locals is the encoded locals vector body (nil for none).
// It returns the function index.
func (b *Builder) Func(params, results []byte, locals []byte, code []byte) uint32 {
	b.funcs = append(b.funcs, builtFunc{b.Type(params, results), locals, code})
	return b.importFuncs + uint32(len(b.funcs)-1)
}

// Memory declares memory 0 with min pages and, if max >= 0, a maximum.
func (b *Builder) Memory(min uint32, max int64) {
	if max >= 0 {
		b.memory = &[3]uint32{min, uint32(max), 1}
	} else {
		b.memory = &[3]uint32{min, 0, 0}
	}
}

// Table adds a funcref table with min elements and, if max >= 0, a maximum;
// it returns the table's index.
func (b *Builder) Table(min uint32, max int64) uint32 {
	if max >= 0 {
		b.tables = append(b.tables, [3]uint32{min, uint32(max), 1})
	} else {
		b.tables = append(b.tables, [3]uint32{min, 0, 0})
	}
	return uint32(len(b.tables) - 1)
}

// GlobalI32 adds a mutable i32 global initialised to v and returns its index.
func (b *Builder) GlobalI32(v int32) uint32 {
	g := []byte{I32, 0x01, 0x41}
	g = AppendS64(g, int64(v))
	b.globals = append(b.globals, append(g, 0x0b))
	return uint32(len(b.globals) - 1)
}

// Export exports an item by kind and index.
func (b *Builder) Export(name string, kind byte, index uint32) {
	b.exports = append(b.exports, Export{Name: name, Kind: kind, Index: index})
}

// Data places bytes in memory 0 at offset.
func (b *Builder) Data(offset uint32, bytes []byte) {
	b.data = append(b.data, builtData{offset, bytes})
}

// Bytes encodes the module.
func (b *Builder) Bytes() []byte {
	m := &Module{}
	add := func(id byte, p []byte) { m.Sections = append(m.Sections, Section{ID: id, Payload: p}) }

	p := AppendU32(nil, uint32(len(b.types)))
	for _, t := range b.types {
		p = append(p, 0x60)
		p = AppendU32(p, uint32(len(t[0])))
		p = append(p, t[0]...)
		p = AppendU32(p, uint32(len(t[1])))
		p = append(p, t[1]...)
	}
	add(SecType, p)

	if len(b.imports) > 0 {
		p = AppendU32(nil, uint32(len(b.imports)))
		for _, imp := range b.imports {
			p = AppendName(p, imp.module)
			p = AppendName(p, imp.name)
			p = append(p, KindFunc)
			p = AppendU32(p, imp.typ)
		}
		add(SecImport, p)
	}

	p = AppendU32(nil, uint32(len(b.funcs)))
	for _, f := range b.funcs {
		p = AppendU32(p, f.typ)
	}
	add(SecFunction, p)

	if len(b.tables) > 0 {
		p = AppendU32(nil, uint32(len(b.tables)))
		for _, t := range b.tables {
			p = append(p, 0x70, byte(t[2]))
			p = AppendU32(p, t[0])
			if t[2] == 1 {
				p = AppendU32(p, t[1])
			}
		}
		add(SecTable, p)
	}

	if b.memory != nil {
		p = []byte{1, byte(b.memory[2])}
		p = AppendU32(p, b.memory[0])
		if b.memory[2] == 1 {
			p = AppendU32(p, b.memory[1])
		}
		add(SecMemory, p)
	}

	if len(b.globals) > 0 {
		p = AppendU32(nil, uint32(len(b.globals)))
		for _, g := range b.globals {
			p = append(p, g...)
		}
		add(SecGlobal, p)
	}

	p = AppendU32(nil, uint32(len(b.exports)))
	for _, e := range b.exports {
		p = AppendName(p, e.Name)
		p = append(p, e.Kind)
		p = AppendU32(p, e.Index)
	}
	add(SecExport, p)

	p = AppendU32(nil, uint32(len(b.funcs)))
	for _, f := range b.funcs {
		body := f.locals
		if body == nil {
			body = []byte{0}
		}
		body = append(append([]byte(nil), body...), f.code...)
		p = AppendU32(p, uint32(len(body)))
		p = append(p, body...)
	}
	add(SecCode, p)

	if len(b.data) > 0 {
		p = AppendU32(nil, uint32(len(b.data)))
		for _, d := range b.data {
			p = append(p, 0x00, 0x41)
			p = AppendS64(p, int64(int32(d.offset)))
			p = append(p, 0x0b)
			p = AppendU32(p, uint32(len(d.bytes)))
			p = append(p, d.bytes...)
		}
		add(SecData, p)
	}
	return m.Encode()
}

// I32Const returns the instruction bytes of i32.const v.
func I32Const(v int32) []byte { return AppendS64([]byte{0x41}, int64(v)) }

// I64Const returns the instruction bytes of i64.const v.
func I64Const(v int64) []byte { return AppendS64([]byte{0x42}, v) }

// Code concatenates instruction fragments.
func Code(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
