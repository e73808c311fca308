package serve

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// On an https:// client port every client negotiates h2 through ALPN, gRPC
// and curl alike, so the HTTP/2 preface cannot tell gRPC from the JSON
// gateway or /health as it does on a plaintext port. etcd serves its TLS
// port from net/http and hands gRPC requests to grpc.Server.ServeHTTP; we
// keep gRPC on its own transport and split the HTTP/2 connections instead:
// cmux reads the first request's content-type (answering the client's
// SETTINGS first, since some gRPC clients, grpc-java among them, wait for
// the server's before they send a request), sends application/grpc to the
// gRPC server and the rest to an HTTP/2 server running the HTTP handler.

// matchGRPC is the cmux matcher of gRPC connections on an https:// port:
// an HTTP/2 connection whose first request has an application/grpc*
// content-type. Like cmux's HTTP2MatchHeaderFieldPrefixSendSettings it
// answers the client's SETTINGS before the request arrives, but its
// SETTINGS frame already carries NO_RFC7540_PRIORITIES=1, the one value
// x/net/http2's server announces that a peer may not see change
// (RFC 9218 §2.1: nghttp2, hence curl, hangs up when it does).
func matchGRPC(w io.Writer, r io.Reader) bool {
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(r, preface); err != nil || string(preface) != http2.ClientPreface {
		return false
	}
	matched, done := false, false
	dec := hpack.NewDecoder(4<<10, func(f hpack.HeaderField) {
		if f.Name == "content-type" {
			done, matched = true, strings.HasPrefix(f.Value, "application/grpc")
		}
	})
	fr := http2.NewFramer(w, r)
	for !done {
		f, err := fr.ReadFrame()
		if err != nil {
			return false
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := fr.WriteSettings(http2.Setting{ID: http2.SettingNoRFC7540Priorities, Val: 1}); err != nil {
					return false
				}
			}
		case *http2.HeadersFrame:
			if _, err := dec.Write(f.HeaderBlockFragment()); err != nil {
				return false
			}
			done = done || f.HeadersEnded()
		case *http2.ContinuationFrame:
			if _, err := dec.Write(f.HeaderBlockFragment()); err != nil {
				return false
			}
			done = done || f.HeadersEnded()
		}
	}
	return matched
}

// h2Server serves HTTP/2 connections that are not gRPC with the HTTP
// handler, and tracks them so that shutdown ends them.
type h2Server struct {
	h2   *http2.Server
	base *http.Server

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// newH2Server configures base for HTTP/2 (its Shutdown then sends GOAWAY
// on these connections) with etcd's stream limit.
func newH2Server(base *http.Server, maxStreams uint32) (*h2Server, error) {
	h2 := &http2.Server{MaxConcurrentStreams: maxStreams}
	if err := http2.ConfigureServer(base, h2); err != nil {
		return nil, err
	}
	return &h2Server{h2: h2, base: base, conns: map[net.Conn]struct{}{}}, nil
}

// serve accepts from l until it is closed.
func (h *h2Server) serve(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			c.Close()
			continue
		}
		h.conns[c] = struct{}{}
		h.wg.Add(1)
		h.mu.Unlock()
		go func() {
			defer h.wg.Done()
			h.h2.ServeConn(&settingsAckFilter{Conn: c, prefaceLeft: len(http2.ClientPreface)}, &http2.ServeConnOpts{
				Context:    withConnTLS(context.Background(), c),
				BaseConfig: h.base,
				Handler:    h.base.Handler,
			})
			h.mu.Lock()
			delete(h.conns, c)
			h.mu.Unlock()
		}()
	}
}

// close ends the connections still open (after the base server's
// Shutdown asked them to finish) and waits for their goroutines.
func (h *h2Server) close() {
	h.mu.Lock()
	h.closed = true
	for c := range h.conns {
		c.Close()
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// settingsAckFilter hides from the HTTP/2 server the client's
// acknowledgement of the SETTINGS frame cmux sent while it matched the
// connection: the server did not send that frame, and x/net/http2 hangs up
// on an acknowledgement of settings it never sent. It parses frame headers
// only until that acknowledgement is dropped, then reads straight through.
type settingsAckFilter struct {
	net.Conn

	prefaceLeft int    // bytes of the client preface still to pass
	payloadLeft int    // bytes of the current frame's payload still to pass
	hdr         []byte // a frame header being collected
	dropped     bool   // the acknowledgement is gone: read straight through
	out         []byte // filtered bytes not yet returned
	err         error  // the read error to return once out is drained
	buf         [4096]byte
}

func (c *settingsAckFilter) Read(p []byte) (int, error) {
	for {
		if len(c.out) > 0 {
			n := copy(p, c.out)
			c.out = c.out[n:]
			return n, nil
		}
		if c.err != nil {
			return 0, c.err
		}
		if c.dropped {
			return c.Conn.Read(p)
		}
		n, err := c.Conn.Read(c.buf[:])
		c.out = c.filter(c.buf[:n])
		c.err = err
	}
}

// filter passes in through the frame parser and returns what the server
// should see.
func (c *settingsAckFilter) filter(in []byte) []byte {
	out := make([]byte, 0, len(in)+http2FrameHeaderLen)
	for len(in) > 0 {
		switch {
		case c.dropped:
			return append(out, in...)
		case c.prefaceLeft > 0:
			n := min(c.prefaceLeft, len(in))
			out, in, c.prefaceLeft = append(out, in[:n]...), in[n:], c.prefaceLeft-n
		case c.payloadLeft > 0:
			n := min(c.payloadLeft, len(in))
			out, in, c.payloadLeft = append(out, in[:n]...), in[n:], c.payloadLeft-n
		default:
			n := min(http2FrameHeaderLen-len(c.hdr), len(in))
			c.hdr, in = append(c.hdr, in[:n]...), in[n:]
			if len(c.hdr) < http2FrameHeaderLen {
				continue
			}
			length := int(c.hdr[0])<<16 | int(c.hdr[1])<<8 | int(c.hdr[2])
			typ, flags := http2.FrameType(c.hdr[3]), http2.Flags(c.hdr[4])
			if typ == http2.FrameSettings && flags.Has(http2.FlagSettingsAck) && length == 0 {
				c.dropped = true
			} else {
				out = append(out, c.hdr...)
				c.payloadLeft = length
			}
			c.hdr = c.hdr[:0]
		}
	}
	return out
}

// http2FrameHeaderLen is the size of an HTTP/2 frame header (RFC 9113 §4.1).
const http2FrameHeaderLen = 9
