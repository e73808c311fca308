package wasmbin

import (
	"bytes"
	"testing"
)

// TestWeighChunks: a region is charged by its weight, cut into chunks of
// at most ChunkWeight, and a chunk starts again after the end (and the
// else) of any block inside which one started, so that a forward branch
// cannot skip a chunk's charge.
func TestWeighChunks(t *testing.T) {
	rw := &rewriter{}
	none := func(byte, uint32) int64 { return 0 }
	nops := bytes.Repeat([]byte{0x01}, ChunkWeight+10)

	// loop { 5 nops; br 0 }: the loop's chunk weighs its 7 instructions.
	code := Code([]byte{0x03, 0x40}, bytes.Repeat([]byte{0x01}, 5), []byte{0x0c, 0x00, 0x0b, 0x0b})
	p, err := rw.weigh(code, none)
	if err != nil {
		t.Fatal(err)
	}
	if p[2] != 7 || p[0] != 2 {
		t.Errorf("loop: %v", p)
	}

	// block { nops…; br 0 } nop: a chunk starts inside the block, so one
	// starts after its end too.
	code = Code([]byte{0x02, 0x40, 0x0c, 0x00}, nops, []byte{0x0b, 0x01, 0x0b})
	p, err = rw.weigh(code, none)
	if err != nil {
		t.Fatal(err)
	}
	after := len(code) - 2
	if _, ok := p[after]; !ok || len(p) != 3 {
		t.Errorf("block: no chunk after the block's end: %v", p)
	}
	for k, c := range p {
		if c > ChunkWeight+HostCallWeight {
			t.Errorf("chunk at %d weighs %d", k, c)
		}
	}

	// if { nops… } else { nop } : the else arm gets its own chunk.
	code = Code([]byte{0x41, 0x00, 0x04, 0x40}, nops, []byte{0x05, 0x01, 0x0b, 0x0b})
	p, err = rw.weigh(code, none)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p[len(code)-3]; !ok {
		t.Errorf("if: no chunk after else: %v", p)
	}

	// A call weighs what callWeight says.
	code = Code([]byte{0x10, 0x00, 0x10, 0x00, 0x0b})
	p, err = rw.weigh(code, func(byte, uint32) int64 { return HostCallWeight })
	if err != nil {
		t.Fatal(err)
	}
	if p[0] != 2*(1+HostCallWeight)+1 {
		t.Errorf("calls: %v", p)
	}
}
