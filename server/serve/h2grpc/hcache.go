package h2grpc

import "bytes"

// headerCache remembers the requests of the last few header blocks that
// were made of indexed fields only. A client sends the same headers with
// every call (grpc-go's HPACK encoder indexes them all after the first),
// so the same bytes come again and again; while the decoder's dynamic
// table is unchanged they decode to the same fields, and the reader takes
// the request it parsed last time instead of decoding and parsing again.
// A block with any other representation may change the table, so it
// empties the cache. The reader's own.
type headerCache struct {
	e    [4]cachedBlock
	next int
}

type cachedBlock struct {
	block []byte
	rq    *request
}

// get returns the request of block, or nil.
func (h *headerCache) get(block []byte) *request {
	for i := range h.e {
		if e := &h.e[i]; e.rq != nil && bytes.Equal(e.block, block) {
			return e.rq
		}
	}
	return nil
}

// put remembers block's request; block must be indexedOnly.
func (h *headerCache) put(block []byte, rq *request) {
	e := &h.e[h.next]
	h.next = (h.next + 1) % len(h.e)
	e.block = append(e.block[:0], block...)
	e.rq = rq
}

// clear forgets every block (the dynamic table may have changed).
func (h *headerCache) clear() {
	for i := range h.e {
		h.e[i].rq = nil
	}
}

// indexedOnly reports whether an HPACK block is made of indexed field
// representations only (RFC 7541 §6.1), which leave the decoder's dynamic
// table as it was.
func indexedOnly(b []byte) bool {
	for i := 0; i < len(b); {
		if b[i]&0x80 == 0 {
			return false
		}
		if b[i]&0x7f != 0x7f {
			i++
			continue
		}
		// An index of 127 or more: continuation bytes with the top bit
		// set, then one without.
		for i++; i < len(b) && b[i]&0x80 != 0; i++ {
		}
		if i == len(b) {
			return false
		}
		i++
	}
	return len(b) > 0
}
