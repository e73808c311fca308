package serve

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// clientStart is what an HTTP/2 client sends first: the preface, its
// SETTINGS, a request for contentType, and (ackFirst) its acknowledgement
// of the server's SETTINGS before the request, else after it, followed by a
// DATA frame.
func clientStart(t *testing.T, contentType string, ackFirst bool) (all, withoutAck []byte) {
	t.Helper()
	frames := func(withAck bool) []byte {
		var buf bytes.Buffer
		buf.WriteString(http2.ClientPreface)
		fr := http2.NewFramer(&buf, nil)
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
		if withAck && ackFirst {
			fr.WriteSettingsAck()
		}
		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		enc.WriteField(hpack.HeaderField{Name: ":method", Value: "POST"})
		enc.WriteField(hpack.HeaderField{Name: ":path", Value: "/v3/kv/range"})
		if contentType != "" {
			enc.WriteField(hpack.HeaderField{Name: "content-type", Value: contentType})
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
		if withAck && !ackFirst {
			fr.WriteSettingsAck()
		}
		fr.WriteSettingsAck() // a later acknowledgement is the server's own
		fr.WriteData(1, true, bytes.Repeat([]byte("x"), 5000))
		return buf.Bytes()
	}
	return frames(true), frames(false)
}

// chunkedConn is a net.Conn whose reads return random small pieces.
type chunkedConn struct {
	net.Conn
	data []byte
	rng  *rand.Rand
}

func (c *chunkedConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := min(1+c.rng.IntN(13), len(c.data), len(p))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

func TestSettingsAckFilter(t *testing.T) {
	for _, ackFirst := range []bool{true, false} {
		all, want := clientStart(t, "application/json", ackFirst)
		for seed := range uint64(50) {
			f := &settingsAckFilter{Conn: &chunkedConn{data: all, rng: rand.New(rand.NewPCG(seed, 1))}, prefaceLeft: len(http2.ClientPreface)}
			got, err := io.ReadAll(f)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("ackFirst=%v seed %d: filtered stream differs from the stream without the first SETTINGS ack", ackFirst, seed)
			}
		}
	}
}

func TestMatchGRPC(t *testing.T) {
	for _, tt := range []struct {
		contentType string
		want        bool
	}{
		{"application/grpc", true},
		{"application/grpc+proto", true},
		{"application/json", false},
		{"", false},
	} {
		all, _ := clientStart(t, tt.contentType, false)
		var wrote bytes.Buffer
		if got := matchGRPC(&wrote, bytes.NewReader(all)); got != tt.want {
			t.Errorf("content-type %q: matched %v, want %v", tt.contentType, got, tt.want)
		}
		// The client's SETTINGS was answered, with NO_RFC7540_PRIORITIES.
		f, err := http2.NewFramer(nil, &wrote).ReadFrame()
		sf, ok := f.(*http2.SettingsFrame)
		if err != nil || !ok || sf.IsAck() {
			t.Fatalf("content-type %q: wrote %v %v, want SETTINGS", tt.contentType, f, err)
		}
		if v, ok := sf.Value(http2.SettingNoRFC7540Priorities); !ok || v != 1 {
			t.Errorf("content-type %q: SETTINGS without NO_RFC7540_PRIORITIES=1", tt.contentType)
		}
	}
	if matchGRPC(io.Discard, bytes.NewReader([]byte("POST / HTTP/1.1\r\n\r\n"))) {
		t.Error("HTTP/1 matched as gRPC")
	}
}
