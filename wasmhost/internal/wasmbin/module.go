package wasmbin

import (
	"bytes"
	"errors"
	"fmt"
)

// Section ids of the core specification (plus the exception-handling tag
// section).
const (
	SecCustom    = 0
	SecType      = 1
	SecImport    = 2
	SecFunction  = 3
	SecTable     = 4
	SecMemory    = 5
	SecGlobal    = 6
	SecExport    = 7
	SecStart     = 8
	SecElement   = 9
	SecCode      = 10
	SecData      = 11
	SecDataCount = 12
	SecTag       = 13
)

// External kinds of imports and exports.
const (
	KindFunc   = 0
	KindTable  = 1
	KindMemory = 2
	KindGlobal = 3
	KindTag    = 4
)

// Value types.
const (
	I32 = 0x7f
	I64 = 0x7e
	F32 = 0x7d
	F64 = 0x7c
)

var header = []byte{0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00}

// Section is one section of a module, its payload not decoded.
type Section struct {
	ID      byte
	Name    string // custom sections only
	Payload []byte // for custom sections, the bytes after the name
}

// Import is one entry of the import section.
type Import struct {
	Module, Name string
	Kind         byte
}

// Export is one entry of the export section.
type Export struct {
	Name  string
	Kind  byte
	Index uint32
}

// Module is a parsed binary: its sections in order.
type Module struct {
	Sections []Section
}

// Parse splits a binary into its sections. It checks the header and the
// section framing only; wazero validates the rest.
func Parse(bin []byte) (*Module, error) {
	if len(bin) < len(header) || !bytes.Equal(bin[:4], header[:4]) {
		return nil, errors.New("not a WebAssembly binary (bad magic)")
	}
	if !bytes.Equal(bin[4:8], header[4:]) {
		return nil, errors.New("unsupported WebAssembly binary version (want 1)")
	}
	r := &reader{b: bin, off: len(header)}
	m := &Module{}
	for !r.done() {
		id := r.byte()
		size := r.u32()
		payload := r.bytes(int(size))
		if r.err != nil {
			return nil, fmt.Errorf("section framing: %w", r.err)
		}
		s := Section{ID: id, Payload: payload}
		if id == SecCustom {
			pr := &reader{b: payload}
			s.Name = pr.name()
			if pr.err != nil {
				return nil, fmt.Errorf("custom section name: %w", pr.err)
			}
			s.Payload = payload[pr.off:]
		}
		m.Sections = append(m.Sections, s)
	}
	if r.err != nil {
		return nil, r.err
	}
	return m, nil
}

// Section returns the first section with the given id, or nil.
func (m *Module) Section(id byte) *Section {
	for i := range m.Sections {
		if m.Sections[i].ID == id {
			return &m.Sections[i]
		}
	}
	return nil
}

// Imports decodes the import section.
func (m *Module) Imports() ([]Import, error) {
	s := m.Section(SecImport)
	if s == nil {
		return nil, nil
	}
	r := &reader{b: s.Payload}
	n := r.u32()
	var out []Import
	for i := uint32(0); i < n && r.err == nil; i++ {
		imp := Import{Module: r.name(), Name: r.name(), Kind: r.byte()}
		switch imp.Kind {
		case KindFunc:
			r.u32()
		case KindTable:
			r.byte() // reftype
			skipLimits(r)
		case KindMemory:
			skipLimits(r)
		case KindGlobal:
			r.byte()
			r.byte()
		case KindTag:
			r.byte()
			r.u32()
		default:
			r.fail(fmt.Errorf("import %d: unknown kind %d", i, imp.Kind))
		}
		out = append(out, imp)
	}
	if r.err != nil {
		return nil, fmt.Errorf("import section: %w", r.err)
	}
	return out, nil
}

func skipLimits(r *reader) {
	flags := r.byte()
	r.u32()
	if flags&1 != 0 {
		r.u32()
	}
}

// Exports decodes the export section.
func (m *Module) Exports() ([]Export, error) {
	s := m.Section(SecExport)
	if s == nil {
		return nil, nil
	}
	r := &reader{b: s.Payload}
	n := r.u32()
	var out []Export
	for i := uint32(0); i < n && r.err == nil; i++ {
		out = append(out, Export{Name: r.name(), Kind: r.byte(), Index: r.u32()})
	}
	if r.err != nil {
		return nil, fmt.Errorf("export section: %w", r.err)
	}
	return out, nil
}

// Encode writes the module back to a binary.
func (m *Module) Encode() []byte {
	out := append([]byte(nil), header...)
	for _, s := range m.Sections {
		out = append(out, s.ID)
		if s.ID == SecCustom {
			name := AppendName(nil, s.Name)
			out = AppendU32(out, uint32(len(name)+len(s.Payload)))
			out = append(out, name...)
		} else {
			out = AppendU32(out, uint32(len(s.Payload)))
		}
		out = append(out, s.Payload...)
	}
	return out
}

// sectionRank orders known sections as the binary format requires (the tag
// section sits between memory and global).
func sectionRank(id byte) int {
	switch id {
	case SecType:
		return 1
	case SecImport:
		return 2
	case SecFunction:
		return 3
	case SecTable:
		return 4
	case SecMemory:
		return 5
	case SecTag:
		return 6
	case SecGlobal:
		return 7
	case SecExport:
		return 8
	case SecStart:
		return 9
	case SecElement:
		return 10
	case SecDataCount:
		return 11
	case SecCode:
		return 12
	case SecData:
		return 13
	}
	return 0
}

// setSection replaces the payload of the section with id, or inserts the
// section at its place in the order.
func (m *Module) setSection(id byte, payload []byte) {
	if s := m.Section(id); s != nil {
		s.Payload = payload
		return
	}
	rank := sectionRank(id)
	at := len(m.Sections)
	for i, s := range m.Sections {
		if s.ID != SecCustom && sectionRank(s.ID) > rank {
			at = i
			break
		}
	}
	m.Sections = append(m.Sections, Section{})
	copy(m.Sections[at+1:], m.Sections[at:])
	m.Sections[at] = Section{ID: id, Payload: payload}
}
