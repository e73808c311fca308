package h2grpc

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"

	"golang.org/x/net/http2"
)

// TestDataCoalesce: DATA queued back to back for one stream shares a
// frame up to the peer's frame size; another stream's data, any other
// frame, or a flush in between starts a new frame; the bytes are intact.
func TestDataCoalesce(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	got := make(chan []byte)
	go func() {
		out, _ := io.ReadAll(b)
		got <- out
	}()
	c := newConn(NewServer(Options{Codec: protoCodec()}), a, nil)
	c.peerMaxFrame = 100
	s := strings.Repeat
	c.mu.Lock()
	c.writeDataLocked(1, []byte(s("a", 30)))
	c.writeDataLocked(1, []byte(s("b", 30)))
	c.writeDataLocked(1, []byte(s("c", 40))) // exactly fills the frame
	c.writeDataLocked(1, []byte("d"))        // past the frame size: new frame
	c.writeDataLocked(3, []byte(s("e", 10))) // another stream
	c.writeDataLocked(1, []byte(s("f", 10))) // back to stream 1
	c.wfr.WritePing(false, [8]byte{})
	c.writeDataLocked(1, []byte(s("g", 10))) // after a PING
	c.flushLocked()
	c.writeDataLocked(1, []byte("h")) // after a flush
	c.writeDataLocked(1, []byte("i"))
	c.flushLocked()
	c.mu.Unlock()
	a.Close()

	type frame struct {
		id   uint32
		body string
	}
	fr := http2.NewFramer(io.Discard, bytes.NewReader(<-got))
	var frames []frame
	for {
		f, err := fr.ReadFrame()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if d, ok := f.(*http2.DataFrame); ok {
			frames = append(frames, frame{d.StreamID, string(d.Data())})
		}
	}
	want := []frame{
		{1, s("a", 30) + s("b", 30) + s("c", 40)},
		{1, "d"},
		{3, s("e", 10)},
		{1, s("f", 10)},
		{1, s("g", 10)},
		{1, "hi"},
	}
	if len(frames) != len(want) {
		t.Fatalf("got %d frames %v, want %d", len(frames), frames, len(want))
	}
	for i := range want {
		if frames[i] != want[i] {
			t.Errorf("frame %d: got stream %d %q, want stream %d %q", i, frames[i].id, frames[i].body, want[i].id, want[i].body)
		}
	}
}
