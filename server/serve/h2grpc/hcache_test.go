package h2grpc

import (
	"bytes"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

func TestIndexedOnly(t *testing.T) {
	for _, c := range []struct {
		b    []byte
		want bool
	}{
		{nil, false},
		{[]byte{0x83, 0x86}, true},                        // static :method POST, :scheme http
		{[]byte{0xbe, 0xff, 0x80, 0x01, 0x82}, true},      // 62, a long index (127+128), 2
		{[]byte{0xff, 0x80}, false},                       // a long index cut short
		{[]byte{0xff}, false},                             // likewise
		{[]byte{0x83, 0x40, 0x01, 'k', 0x01, 'v'}, false}, // a literal with indexing
		{[]byte{0x20}, false},                             // a table size update
		{[]byte{0x83, 0x04, 0x01, '/'}, false},            // a literal without indexing
	} {
		if got := indexedOnly(c.b); got != c.want {
			t.Errorf("indexedOnly(% x) = %v", c.b, got)
		}
	}
}

// TestHeaderCacheFollowsTable: the same block bytes decode to other
// fields once the client's encoder has added to the dynamic table; the
// server must answer what they decode to now, not what it cached.
func TestHeaderCacheFollowsTable(t *testing.T) {
	s := NewServer(Options{Codec: protoCodec()})
	fr, _ := rawLean(t, s)

	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	ref := hpack.NewDecoder(4096, nil) // what the server's decoder must see
	block := func(echo string) []byte {
		hb.Reset()
		for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/grpc.testing.TestService/UnaryCall"},
			{":authority", "x"}, {"content-type", "application/grpc"}, {"echo-header", echo}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		return bytes.Clone(hb.Bytes())
	}
	id := uint32(1)
	var refFields []hpack.HeaderField
	call := func(b []byte) (echo, grpcStatus string) {
		t.Helper()
		var err error
		if refFields, err = ref.DecodeFull(b); err != nil {
			t.Fatal(err)
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: b, EndHeaders: true})
		fr.WriteData(id, true, []byte{0, 0, 0, 0, 0})
		defer func() { id += 2 }()
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatal(err)
			}
			mh, ok := f.(*http2.MetaHeadersFrame)
			if !ok || mh.StreamID != id {
				continue
			}
			if v := mh.PseudoValue("status"); v != "" && v != "200" {
				t.Fatalf(":status %s", v)
			}
			for _, hf := range mh.Fields {
				switch hf.Name {
				case "echo-header":
					echo = hf.Value
				case "grpc-status":
					grpcStatus = hf.Value
				}
			}
			if mh.StreamEnded() {
				return echo, grpcStatus
			}
		}
	}
	if e, st := call(block("v1")); e != "v1" || st != "0" { // literals: nothing cached
		t.Fatalf("first call: echo %q status %s", e, st)
	}
	b2 := block("v1")
	if !indexedOnly(b2) {
		t.Fatalf("the second block is not all indexed: % x", b2)
	}
	for range 2 { // decoded, then from the cache
		if e, st := call(b2); e != "v1" || st != "0" {
			t.Fatalf("indexed call: echo %q status %s", e, st)
		}
	}
	if e, st := call(block("v2")); e != "v2" || st != "0" {
		t.Fatalf("new value: echo %q status %s", e, st)
	}
	// b2 again: its indexes now point one entry further on, to no :path.
	e, st := call(b2)
	for _, f := range refFields {
		if f.Name == ":path" {
			t.Fatalf("the test's premise: b2 now decodes to %v", refFields)
		}
	}
	if st != "12" {
		t.Fatalf("old bytes under the new table: echo %q status %s (want Unimplemented: no :path)", e, st)
	}
}
