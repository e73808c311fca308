package wasmbin

import "errors"

// Fuel is charged by weight, not per loop iteration or call: a check
// charges the straight-line code that runs until the next check, so that a
// loop whose body is 400,000 instructions (or 100,000 host calls, or calls
// of a long leaf function) cannot run 10,000 iterations of it between two
// check-ins.
//
// A chunk is a stretch of one region (a function's top level, or a loop
// body, nested loops excluded) that is charged at its start: every
// instruction of it costs one fuel, a call of an import HostCallWeight, a
// direct call of a light leaf function (one that calls nothing and whose
// entry chunk weighs at most LightLeaf) one plus that leaf's entry weight,
// a call_indirect the most either can cost. Other functions charge their
// own entry chunk when they are entered.
//
// A region is cut into chunks of at most ChunkWeight. Execution only moves
// forward inside a region (a branch to a loop goes to that loop's head,
// which is a check), so a chunk's start runs before any of its
// instructions, provided no branch can jump over it: a new chunk therefore
// also starts right after the end (and the else) of every block or if
// inside which a chunk started, which is where such a branch lands.
const (
	HostCallWeight = 64
	LightLeaf      = 64
	ChunkWeight    = 1 << 16
)

// plan is where one body's checks go: the charge of the chunk that starts
// before the instruction at each offset of the code (0: the entry chunk).
type plan map[int]int32

type planFrame struct {
	loop   bool
	starts int // the region's chunk-start count when the frame opened
}

type region struct {
	key    int // offset where the current chunk starts
	weight int64
	starts int
}

// weigh plans the checks of a body's code. callWeight gives the extra
// weight of a call instruction beyond its own 1 (see above).
func (rw *rewriter) weigh(code []byte, callWeight func(op byte, idx uint32) int64) (plan, error) {
	p := plan{}
	regions := []region{{key: 0}}
	frames := []planFrame{{starts: 0}}
	newChunk := func(at int) {
		r := &regions[len(regions)-1]
		p[r.key] = int32(max(r.weight, 1))
		r.key, r.weight = at, 0
		r.starts++
	}
	add := func(at int, w int64) {
		r := &regions[len(regions)-1]
		if r.weight > 0 && r.weight+w > ChunkWeight {
			newChunk(at)
			r = &regions[len(regions)-1]
		}
		r.weight += w
	}
	// restart handles the else or end at start closing (part of) frame f:
	// if a chunk started inside f, one starts again after it. A chunk that
	// holds nothing but this instruction is moved past it instead, so that
	// a run of ends costs one check, not one each.
	restart := func(start, next int, f planFrame) {
		rg := &regions[len(regions)-1]
		if rg.starts == f.starts {
			add(start, 1)
			return
		}
		if rg.key == start {
			rg.key = next
			return
		}
		add(start, 1)
		newChunk(next)
	}
	r := &reader{b: code}
	for !r.done() {
		start := r.off
		op := r.byte()
		w := int64(1)
		switch op {
		case 0x02, 0x03, 0x04: // block, loop, if
			readBlockType(r)
			add(start, 1)
			if op == 0x03 {
				frames = append(frames, planFrame{loop: true})
				regions = append(regions, region{key: r.off})
			} else {
				frames = append(frames, planFrame{starts: regions[len(regions)-1].starts})
			}
			continue
		case 0x05: // else
			restart(start, r.off, frames[len(frames)-1])
			continue
		case 0x0b: // end
			f := frames[len(frames)-1]
			frames = frames[:len(frames)-1]
			if len(frames) == 0 {
				rg := regions[len(regions)-1]
				p[rg.key] = int32(max(rg.weight+1, 1))
				if !r.done() {
					return nil, errors.New("code after the function's end")
				}
				return p, nil
			}
			if f.loop {
				rg := regions[len(regions)-1]
				p[rg.key] = int32(max(rg.weight+1, 1))
				regions = regions[:len(regions)-1]
				continue
			}
			restart(start, r.off, f)
			continue
		case 0x10, 0x12: // call, return_call
			w += callWeight(op, r.u32())
		case 0x11, 0x13: // call_indirect, return_call_indirect
			r.u32()
			r.u32()
			w += callWeight(op, 0)
		default:
			if err := skipImmediates(r, op); err != nil {
				return nil, err
			}
		}
		if r.err != nil {
			return nil, r.err
		}
		add(start, w)
	}
	if r.err != nil {
		return nil, r.err
	}
	return nil, errors.New("function body does not end")
}
