package wasmbin

import "fmt"

// Control is what the compiler's cost grows with beyond a body's size:
// wazero v1.12's optimizing compiler spends time superlinear in a
// function's basic blocks (10,000 nested blocks took 0.8 s, 30,000 took
// 9 s, 100,000 took 2 minutes), so they are bounded by a limit of their
// own, per function.
type Control struct {
	// MaxBlocks is the most block, loop, if and else instructions and
	// br_table targets of one function; MaxDepth its deepest nesting.
	MaxBlocks, MaxDepth uint64
	// Func is the index among defined functions of the one with MaxBlocks.
	Func uint32
	// Cost sums over functions blocks² + blocks × locals² / 16, about what
	// the compiler's time grows with (in units of ~20 ns on the machine
	// measured): 5,000 ifs in a row compiled in 0.5 s (2.5·10^7), 500 ifs
	// followed by reads of 2,000 locals in 1.9 s (1.3·10^8), 1,000 over
	// 10,000 locals in 80 s (6·10^9).
	Cost uint64
}

// ControlOf walks every body of m once.
func ControlOf(m *Module) (Control, error) {
	var c Control
	s := m.Section(SecCode)
	if s == nil {
		return c, nil
	}
	r := &reader{b: s.Payload}
	n := r.u32()
	for i := uint32(0); i < n && r.err == nil; i++ {
		body := r.bytes(int(r.u32()))
		if r.err != nil {
			break
		}
		br := &reader{b: body}
		groups := br.u32()
		var locals uint64
		for g := uint32(0); g < groups && br.err == nil; g++ {
			locals += uint64(br.u32())
			br.byte()
		}
		var blocks, depth uint64
		for !br.done() && br.err == nil {
			op := br.byte()
			switch op {
			case 0x02, 0x03, 0x04:
				readBlockType(br)
				blocks++
				depth++
				c.MaxDepth = max(c.MaxDepth, depth)
				continue
			case 0x05:
				blocks++
			case 0x0b:
				depth--
			case 0x0e: // br_table: each target is an edge of the graph
				at := br.off
				blocks += uint64(br.u32())
				br.off = at
			}
			if err := skipImmediates(br, op); err != nil {
				return c, fmt.Errorf("function body %d: %w", i, err)
			}
		}
		if br.err != nil {
			return c, fmt.Errorf("function body %d: %w", i, br.err)
		}
		l := min(locals, 1<<20) // the structural limit is far below
		c.Cost = satAdd(c.Cost, satAdd(satMul(blocks, blocks), satMul(blocks, l*l/16)))
		if blocks > c.MaxBlocks {
			c.MaxBlocks, c.Func = blocks, i
		}
	}
	if r.err != nil {
		return c, fmt.Errorf("code section: %w", r.err)
	}
	return c, nil
}

func satAdd(a, b uint64) uint64 {
	if a+b < a {
		return 1<<64 - 1
	}
	return a + b
}

func satMul(a, b uint64) uint64 {
	if a != 0 && b > (1<<64-1)/a {
		return 1<<64 - 1
	}
	return a * b
}
