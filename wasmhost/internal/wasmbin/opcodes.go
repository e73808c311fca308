package wasmbin

import "fmt"

func skipBlockType(r *reader) {
	c := r.byte()
	if c == 0x40 || (c >= 0x6f && c <= 0x7f) {
		return
	}
	if c == 0x63 || c == 0x64 { // (ref null? ht)
		r.skipLEB(5)
		return
	}
	// A type index as s33: c was its first byte.
	if c&0x80 != 0 {
		r.skipLEB(4)
	}
}

func skipMemArg(r *reader) {
	align := r.u32()
	if align&0x40 != 0 { // multi-memory: a memory index follows
		r.u32()
	}
	r.skipLEB(10) // offset (u64 with memory64)
}

// skipImmediates advances r past the immediates of op. Unknown opcodes are an
// error: the module fails to load rather than run unmetered.
func skipImmediates(r *reader, op byte) error {
	switch {
	case op == 0x00, op == 0x01, op == 0x05, op == 0x0b, op == 0x0f, op == 0x0a,
		op == 0x1a, op == 0x1b, op == 0xd1,
		op >= 0x45 && op <= 0xc4:
		// no immediates
	case op == 0x02, op == 0x03, op == 0x04:
		skipBlockType(r)
	case op == 0x08, op == 0x0c, op == 0x0d, op == 0x10, op == 0x12,
		op >= 0x20 && op <= 0x26, op == 0xd2:
		r.u32()
	case op == 0x0e: // br_table
		n := r.u32()
		for i := uint32(0); i <= n && r.err == nil; i++ {
			r.u32()
		}
	case op == 0x11, op == 0x13: // call_indirect, return_call_indirect
		r.u32()
		r.u32()
	case op == 0x1c: // select t*
		n := r.u32()
		for i := uint32(0); i < n && r.err == nil; i++ {
			r.byte()
		}
	case op == 0x1f: // try_table
		skipBlockType(r)
		n := r.u32()
		for i := uint32(0); i < n && r.err == nil; i++ {
			switch r.byte() {
			case 0, 1:
				r.u32()
				r.u32()
			case 2, 3:
				r.u32()
			default:
				return fmt.Errorf("try_table: bad catch kind at offset %d", r.off)
			}
		}
	case op >= 0x28 && op <= 0x3e:
		skipMemArg(r)
	case op == 0x3f, op == 0x40:
		r.u32()
	case op == 0x41:
		r.skipLEB(5)
	case op == 0x42:
		r.skipLEB(10)
	case op == 0x43:
		r.bytes(4)
	case op == 0x44:
		r.bytes(8)
	case op == 0xd0:
		skipBlockType(r) // a heap type has the same shape
	case op == 0xfc:
		return skipFC(r)
	case op == 0xfd:
		return skipFD(r)
	case op == 0xfe:
		sub := r.u32()
		if sub == 0x03 { // atomic.fence
			r.byte()
		} else {
			skipMemArg(r)
		}
	default:
		return fmt.Errorf("unsupported opcode 0x%02x at offset %d", op, r.off-1)
	}
	return nil
}

func skipFC(r *reader) error {
	sub := r.u32()
	switch {
	case sub <= 7: // saturating truncations
	case sub == 8, sub == 10, sub == 12, sub == 14: // memory.init, memory.copy, table.init, table.copy
		r.u32()
		r.u32()
	case sub == 9, sub == 11, sub == 13, sub == 15, sub == 16, sub == 17:
		r.u32()
	default:
		return fmt.Errorf("unsupported opcode 0xfc %d at offset %d", sub, r.off)
	}
	return nil
}

func skipFD(r *reader) error {
	sub := r.u32()
	switch {
	case sub <= 11, sub == 92, sub == 93:
		skipMemArg(r)
	case sub == 12, sub == 13:
		r.bytes(16)
	case sub >= 21 && sub <= 34:
		r.byte()
	case sub >= 84 && sub <= 91:
		skipMemArg(r)
		r.byte()
	case sub <= 0x113:
		// every other SIMD instruction has no immediates
	default:
		return fmt.Errorf("unsupported opcode 0xfd %d at offset %d", sub, r.off)
	}
	return nil
}
