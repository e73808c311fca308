package h2grpc

import (
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
