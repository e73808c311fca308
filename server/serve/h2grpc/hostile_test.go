package h2grpc

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/net/http2"
)

// goAwayCode reads frames until a GOAWAY and returns its code; it fails
// the test if the connection ends first.
func goAwayCode(t *testing.T, fr *http2.Framer) http2.ErrCode {
	t.Helper()
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no GOAWAY before %v", err)
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			return g.ErrCode
		}
	}
}

// TestSettingsMaxFrameSizeOutOfRange: a SETTINGS_MAX_FRAME_SIZE outside
// RFC 9113's 2^14..2^24-1 is a connection error; below it a reply's DATA
// would be cut into empty frames forever (with the connection's lock
// held), above it the length of a coalesced DATA frame would overflow its
// 24 bits.
func TestSettingsMaxFrameSizeOutOfRange(t *testing.T) {
	for _, v := range []uint32{0, 100, 1<<14 - 1, 1 << 24} {
		e := &echoInline{}
		fr, _, hdr, msg := rawInline(t, e, "x")
		fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: v})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr, EndHeaders: true})
		fr.WriteData(1, false, msg)
		if code := goAwayCode(t, fr); code != http2.ErrCodeProtocol {
			t.Errorf("max frame size %d: GOAWAY %v, want PROTOCOL_ERROR", v, code)
		}
	}
}

// TestInlineStreamHostileMessages: whatever a message's bytes, an inline
// call ends with a status (never a panic or a stall), reported once.
func TestInlineStreamHostileMessages(t *testing.T) {
	for _, tc := range []struct {
		name string
		data func(msg []byte) [][]byte // the DATA frames' payloads
		want string                    // frames on stream 1, then Ended
	}{
		{"malformed protobuf", func([]byte) [][]byte { return [][]byte{{0, 0, 0, 0, 2, 0xff, 0xff}} },
			"headers:1:end=true rst:1|Unknown"}, // the handler's error, as it returned it
		{"compressed flag without encoding", func(m []byte) [][]byte { m[0] = 1; return [][]byte{m} },
			"headers:1:end=true rst:1|Internal"},
		{"unknown payload format", func(m []byte) [][]byte { m[0] = 7; return [][]byte{m} },
			"headers:1:end=true rst:1|Internal"},
		{"oversize", func([]byte) [][]byte { return [][]byte{{0, 0x7f, 0xff, 0xff, 0xff, 1}} },
			"headers:1:end=true rst:1|ResourceExhausted"},
		{"zero length then end", func([]byte) [][]byte { return [][]byte{{0, 0, 0, 0, 0}, nil} },
			"headers:1:end=false data:1 headers:1:end=true|OK"},
		{"one byte a frame", func(m []byte) [][]byte {
			var out [][]byte
			for i := range m {
				out = append(out, m[i:i+1])
			}
			return append(out, nil)
		}, "headers:1:end=false data:1 headers:1:end=true|OK"},
		{"truncated at end", func(m []byte) [][]byte { return [][]byte{m[:len(m)-1], nil} },
			"headers:1:end=true|Internal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &echoInline{}
			fr, _, hdr, msg := rawInline(t, e, "x")
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr, EndHeaders: true})
			data := tc.data(bytes.Clone(msg))
			for i, p := range data {
				fr.WriteData(1, i == len(data)-1 && p == nil, p)
			}
			fr.WritePing(false, [8]byte{7})
			// An OK end's trailers may follow the PING's answer
			// (inlineFinish), an error's precede it.
			frames := readUntilPing(t, fr)
			if !strings.Contains(strings.Join(frames, " "), "headers:1:end=true") {
				frames = append(frames, readThrough(t, fr, "headers:1:end=true")...)
			}
			got := strings.Join(frames, " ") + "|" + e.endedList()
			if got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// TestInlineStreamResetDuringHandOver: a stream reset while a goroutine
// has it (a message that would wait, with another queued behind it) ends
// once, Canceled, and nothing more is sent on it.
func TestInlineStreamResetDuringHandOver(t *testing.T) {
	e := &echoInline{release: make(chan struct{}), waiting: make(chan struct{}, 1)}
	fr, _, hdr, slow := rawInline(t, e, "slow")
	_, _, _, msg := rawInline(t, e, "x")
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr, EndHeaders: true})
	fr.WriteData(1, false, slow)
	<-e.waiting
	fr.WriteData(1, false, msg)
	fr.WriteRSTStream(1, http2.ErrCodeCancel)
	if got := e.endedList(); got != "Canceled" {
		t.Fatalf("Ended: %s", got)
	}
	close(e.release)
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: hdr, EndHeaders: true})
	fr.WriteData(3, true, msg)
	got := strings.Join(readThrough(t, fr, "headers:3:end=true"), " ")
	if strings.Contains(got, ":1") || !strings.Contains(got, "data:3") {
		t.Fatalf("frames %s; want none on the reset stream, stream 3 answered", got)
	}
	if got := e.endedList(); got != "Canceled,OK" {
		t.Errorf("Ended: %s", got)
	}
}

// TestInlineStreamZeroWindowUpdate: a WINDOW_UPDATE of 0 on an inline
// stream resets it (a stream error), reports its end once, and the
// connection goes on.
func TestInlineStreamZeroWindowUpdate(t *testing.T) {
	e := &echoInline{}
	fr, _, hdr, msg := rawInline(t, e, "x")
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr, EndHeaders: true})
	fr.WriteData(1, false, msg)
	fr.AllowIllegalWrites = true
	fr.WriteWindowUpdate(1, 0)
	fr.WriteData(1, false, msg) // after the reset: dropped
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: hdr, EndHeaders: true})
	fr.WriteData(3, true, msg)
	got := strings.Join(readThrough(t, fr, "headers:3:end=true"), " ")
	if !strings.HasPrefix(got, "headers:1:end=false data:1 rst:1 headers:3:end=false data:3") {
		t.Fatalf("frames %s", got)
	}
	if got := e.endedList(); got != "Canceled,OK" {
		t.Errorf("Ended: %s", got)
	}
}

// readThrough lists the frames read (as readUntil) up to and including
// one listed as last; PINGs are left out.
func readThrough(t *testing.T, fr *http2.Framer, last string) []string {
	t.Helper()
	var got []string
	for len(got) == 0 || got[len(got)-1] != last {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no %s (%v); frames: %s", last, err, strings.Join(got, " "))
		}
		if l, ok := frameLabel(fr, f); ok {
			got = append(got, l)
		}
	}
	return got
}

// TestInlineStreamGracefulStopMidMessage: GracefulStop ending an inline
// call whose goroutine has sent part of a reply (the client's window is
// full) must not follow the part with trailers: the client would read a
// message cut short as the call's end.
func TestInlineStreamGracefulStopMidMessage(t *testing.T) {
	e := &echoInline{}
	s := NewServer(Options{Codec: protoCodec(), InlineStream: func(string) StreamHandler { return e }})
	fr, _ := rawLean(t, s)
	_, _, hdr, msg := rawInline(t, &echoInline{}, "big")
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr, EndHeaders: true})
	for range 3 { // 90 KiB of replies; the window is 64 KiB
		fr.WriteData(1, false, msg)
	}
	var body []byte
	for len(body) < 65535 {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if d, ok := f.(*http2.DataFrame); ok {
			body = append(body, d.Data()...)
		}
	}
	stopped := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(stopped)
	}()
	var end []string
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			break
		}
		switch f := f.(type) {
		case *http2.DataFrame:
			body = append(body, f.Data()...)
		case *http2.MetaHeadersFrame:
			end = append(end, fmt.Sprintf("headers:end=%v", f.StreamEnded()))
		case *http2.RSTStreamFrame:
			end = append(end, "rst:"+f.ErrCode.String())
		}
	}
	<-stopped
	for len(body) >= 5 {
		n := 5 + (int(body[1])<<24 | int(body[2])<<16 | int(body[3])<<8 | int(body[4]))
		if n > len(body) {
			break
		}
		body = body[n:]
	}
	if len(body) == 0 || strings.Join(end, " ") != "rst:CANCEL" {
		t.Fatalf("after %d bytes of a message cut short: %s; want RST_STREAM CANCEL alone", len(body), strings.Join(end, " "))
	}
}
