package raftnode

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// msgStream is the sending side of one Messages call: a gRPC
// client-streaming call over HTTP/2 on a connection of its own, the same
// bytes on the wire as grpc-go's client sends (so either side may be an
// older member), but written to the socket by the peer's sender goroutine
// itself. grpc-go hands each message to a writer goroutine of its own
// (its "loopy writer"), one more goroutine wake-up and hand-over per
// frame on every member for every write (RATIONALE.md, "A lean sender for
// raft's message streams"). The reader goroutine only sees the
// receiver's flow control, pings and the end of the call.
type msgStream struct {
	nc   net.Conn
	done chan struct{} // closed by fail
	// read is set by the reader on every frame; the keepalive clears it.
	read    atomic.Bool
	pingAck chan struct{}
	// kaTime and kaWait are msgKeepaliveTime and msgKeepaliveWait.
	kaTime, kaWait time.Duration

	// wmu orders writes to nc; the control frames the reader answers
	// with are encoded into wctl under it.
	wmu  sync.Mutex
	wctl bytes.Buffer
	wfr  *http2.Framer

	// The sender's own: the frame being built (a DATA frame header, the
	// gRPC message prefix and the raft frame), reused frame after frame,
	// and the copy a message split into several DATA frames is written
	// from.
	buf, split []byte

	mu         sync.Mutex
	cond       *sync.Cond // a window grew, or the stream failed
	sendWindow int64      // the stream's
	connWindow int64
	peerWindow int64 // the receiver's SETTINGS_INITIAL_WINDOW_SIZE
	maxFrame   int
	header     chan struct{} // closed once the response headers are in
	gotHeader  bool
	err        error // why the stream ended; set once
	recvd      uint32
	// unwatch stops the watch on the opener's context (fail calls it).
	unwatch func() bool
}

// The keepalive of grpc-go's peer connections the stream replaces
// (variables: tests shorten them).
var (
	msgKeepaliveTime = 10 * time.Second
	msgKeepaliveWait = 5 * time.Second
)

const (
	// msgStreamID is the call's HTTP/2 stream, the connection's only one.
	msgStreamID = 1
	// msgOpenTimeout bounds the dial, the TLS handshake and the
	// receiver's answer to the call's headers.
	msgOpenTimeout = 20 * time.Second
	// msgRecvWindow is the window the receiver gets for the little it
	// sends on this call (its headers and trailers are not flow-controlled).
	msgRecvWindow = 1 << 16
)

// openMsgStream dials raw (a peer URL) and starts the Messages call; it
// returns once the receiver accepted it (its cluster, member and removal
// checks answer before any message goes), or with the receiver's refusal
// as a gRPC status error. The stream fails when ctx ends.
func openMsgStream(ctx context.Context, raw string, cfg *TransportConfig, to uint64) (*msgStream, error) {
	life := ctx
	ctx, cancel := context.WithTimeout(ctx, msgOpenTimeout)
	defer cancel()
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("raftnode: peer URL %q: %w", raw, err)
	}
	var secure bool
	switch u.Scheme {
	case "http", "unix":
	case "https", "unixs":
		if cfg.TLS == nil {
			return nil, fmt.Errorf("raftnode: peer URL %q needs TLS but no peer TLS is configured", raw)
		}
		secure = true
	default:
		return nil, fmt.Errorf("raftnode: peer URL %q: unsupported scheme", raw)
	}
	var nc net.Conn
	switch {
	case cfg.Dialer != nil:
		nc, err = cfg.Dialer(ctx, u.Host)
	case u.Scheme == "unix" || u.Scheme == "unixs":
		nc, err = dialUnix(ctx, u.Host)
	default:
		var d net.Dialer
		nc, err = d.DialContext(ctx, "tcp", u.Host)
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "raftnode: dial %s: %v", u.Host, err)
	}
	if secure {
		// As grpc-go's TLS credentials: the server name is the URL's
		// host unless the configuration names one, and ALPN offers h2.
		tc := cfg.TLS.Clone()
		if tc.ServerName == "" {
			tc.ServerName = u.Host
			if h, _, err := net.SplitHostPort(u.Host); err == nil {
				tc.ServerName = h
			}
		}
		if !slices.Contains(tc.NextProtos, "h2") {
			tc.NextProtos = append(tc.NextProtos, "h2")
		}
		c := tls.Client(nc, tc)
		if err := c.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, status.Errorf(codes.Unavailable, "raftnode: TLS handshake with %s: %v", u.Host, err)
		}
		nc = c
	}
	s := &msgStream{
		nc: nc, done: make(chan struct{}), pingAck: make(chan struct{}, 1), header: make(chan struct{}),
		sendWindow: 65535, connWindow: 65535, peerWindow: 65535, maxFrame: 16384,
		kaTime: msgKeepaliveTime, kaWait: msgKeepaliveWait,
	}
	s.cond = sync.NewCond(&s.mu)
	s.wfr = http2.NewFramer(&s.wctl, nil)
	// NB: a sender waiting for flow control holds no lock the keepalive
	// needs, and a receiver whose handler is stuck still answers pings:
	// only the end of ctx (the peer removed, the transport closed) frees
	// it, and RemovePeer, called on the apply goroutine, waits for it.
	s.mu.Lock()
	s.unwatch = context.AfterFunc(life, func() { s.fail(status.FromContextError(life.Err()).Err()) })
	s.mu.Unlock()

	// The preface, our settings and the call's headers in one write.
	scheme := "http"
	if secure {
		scheme = "https"
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{
		{":method", "POST"}, {":scheme", scheme}, {":path", peerStreamMethod}, {":authority", u.Host},
		{"content-type", "application/grpc+" + frameCodec{}.Name()}, {"user-agent", "metastore-peer"}, {"te", "trailers"},
		{mdClusterID, FormatID(cfg.ClusterID)}, {mdFrom, FormatID(cfg.ID)}, {mdTo, FormatID(to)},
	} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	s.wctl.WriteString(http2.ClientPreface)
	s.wfr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: msgRecvWindow})
	s.wfr.WriteHeaders(http2.HeadersFrameParam{StreamID: msgStreamID, BlockFragment: hb.Bytes(), EndHeaders: true})
	if dl, ok := ctx.Deadline(); ok {
		nc.SetWriteDeadline(dl)
	}
	if err := s.writeCtl(); err != nil {
		nc.Close()
		return nil, status.Errorf(codes.Unavailable, "raftnode: write to %s: %v", u.Host, err)
	}
	nc.SetWriteDeadline(time.Time{})
	go s.readLoop()
	go s.keepalive()
	select {
	case <-s.header:
		return s, nil
	case <-s.done:
		return nil, s.err
	case <-ctx.Done():
		s.fail(status.FromContextError(ctx.Err()).Err())
		return nil, s.err
	}
}

// writeCtl writes the control frames encoded into wctl.
func (s *msgStream) writeCtl() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	_, err := s.nc.Write(s.wctl.Bytes())
	s.wctl.Reset()
	return err
}

// fail ends the stream with err (the first reason wins) and closes the
// connection.
func (s *msgStream) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	s.err = err
	close(s.done)
	s.nc.Close()
	s.cond.Broadcast()
	if s.unwatch != nil {
		s.unwatch()
	}
}

// ended reports whether the stream has failed or been closed.
func (s *msgStream) ended() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func (s *msgStream) close() {
	if s != nil {
		s.fail(status.Error(codes.Canceled, "raftnode: stream closed"))
	}
}

// send writes batch (size bytes marshalled) as one gRPC message and
// returns its length; it waits for the receiver's flow control, never for
// the receiver to read it.
func (s *msgStream) send(batch []raftpb.Message, size int) (int, error) {
	const prefix = 9 + 5 // DATA frame header, gRPC message prefix
	b := slices.Grow(s.buf[:0], prefix+size+binary.MaxVarintLen32*len(batch))[:prefix]
	b = appendFrame(b, batch)
	if cap(b) <= maxFrameBytes {
		s.buf = b
	} else {
		s.buf = nil
	}
	n := len(b) - prefix
	b[9] = 0 // not compressed
	binary.BigEndian.PutUint32(b[10:14], uint32(n))
	msg := b[9:]
	for len(msg) > 0 {
		s.mu.Lock()
		for s.err == nil && (s.sendWindow <= 0 || s.connWindow <= 0) {
			s.cond.Wait()
		}
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return 0, err
		}
		k := int(min(int64(len(msg)), s.sendWindow, s.connWindow, int64(s.maxFrame)))
		s.sendWindow -= int64(k)
		s.connWindow -= int64(k)
		s.mu.Unlock()
		var out []byte
		if k == len(msg) && len(msg) == len(b)-9 {
			// All of it in one DATA frame: its header goes in front,
			// in place, and the frame is written without a copy.
			putDataHeader(b[:9], k)
			out = b
		} else {
			s.split = append(putDataHeader(append(s.split[:0], make([]byte, 9)...), k), msg[:k]...)
			out = s.split
		}
		s.wmu.Lock()
		_, err := s.nc.Write(out)
		s.wmu.Unlock()
		if err != nil {
			s.fail(status.Errorf(codes.Unavailable, "raftnode: write to peer: %v", err))
			s.mu.Lock()
			err = s.err
			s.mu.Unlock()
			return 0, err
		}
		msg = msg[k:]
	}
	if cap(s.split) > 1<<20 {
		s.split = nil
	}
	return n, nil
}

// putDataHeader fills b's first 9 bytes with a DATA frame header for
// stream msgStreamID and an n-byte payload, and returns b.
func putDataHeader(b []byte, n int) []byte {
	b[0], b[1], b[2] = byte(n>>16), byte(n>>8), byte(n)
	b[3], b[4] = byte(http2.FrameData), 0
	binary.BigEndian.PutUint32(b[5:9], msgStreamID)
	return b
}

// readLoop reads what the receiver sends until the connection ends.
func (s *msgStream) readLoop() {
	fr := http2.NewFramer(nil, bufio.NewReaderSize(s.nc, 4096))
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.MaxHeaderListSize = 1 << 20
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			s.fail(status.Errorf(codes.Unavailable, "raftnode: peer connection: %v", err))
			return
		}
		s.read.Store(true)
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if f.StreamID == msgStreamID {
				s.onHeaders(f)
			}
		case *http2.SettingsFrame:
			if !f.IsAck() && !s.onSettings(f) {
				return
			}
		case *http2.WindowUpdateFrame:
			s.mu.Lock()
			if f.StreamID == 0 {
				s.connWindow += int64(f.Increment)
			} else if f.StreamID == msgStreamID {
				s.sendWindow += int64(f.Increment)
			}
			s.cond.Broadcast()
			s.mu.Unlock()
		case *http2.PingFrame:
			if f.IsAck() {
				select {
				case s.pingAck <- struct{}{}:
				default:
				}
			} else if !s.control(func() error { return s.wfr.WritePing(true, f.Data) }) {
				return
			}
		case *http2.DataFrame:
			// The receiver sends no messages on this call; its bytes
			// are returned to the windows all the same.
			if n := f.Header().Length; n > 0 {
				s.recvd += n
				if s.recvd >= msgRecvWindow/2 {
					k := s.recvd
					s.recvd = 0
					if !s.control(func() error {
						s.wfr.WriteWindowUpdate(0, k)
						return s.wfr.WriteWindowUpdate(msgStreamID, k)
					}) {
						return
					}
				}
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == msgStreamID {
				s.fail(status.Errorf(codes.Unavailable, "raftnode: stream reset by the peer (%v)", f.ErrCode))
				return
			}
		case *http2.GoAwayFrame:
			if f.ErrCode != http2.ErrCodeNo || f.LastStreamID < msgStreamID {
				s.fail(status.Errorf(codes.Unavailable, "raftnode: the peer went away (%v)", f.ErrCode))
				return
			}
			// A graceful stop: our call may finish; a new one goes to a
			// new connection.
		}
	}
}

// control encodes control frames with enc and writes them; false: the
// connection failed.
func (s *msgStream) control(enc func() error) bool {
	s.wmu.Lock()
	return s.writeControlLocked(enc)
}

// writeControlLocked is control with s.wmu held; it releases it.
func (s *msgStream) writeControlLocked(enc func() error) bool {
	err := enc()
	if err == nil {
		_, err = s.nc.Write(s.wctl.Bytes())
	}
	s.wctl.Reset()
	s.wmu.Unlock()
	if err != nil {
		s.fail(status.Errorf(codes.Unavailable, "raftnode: write to peer: %v", err))
		return false
	}
	return true
}

func (s *msgStream) onSettings(f *http2.SettingsFrame) bool {
	s.mu.Lock()
	f.ForeachSetting(func(st http2.Setting) error {
		switch st.ID {
		case http2.SettingInitialWindowSize:
			s.sendWindow += int64(st.Val) - s.peerWindow
			s.peerWindow = int64(st.Val)
		case http2.SettingMaxFrameSize:
			s.maxFrame = int(st.Val)
		}
		return nil
	})
	s.cond.Broadcast()
	s.mu.Unlock()
	return s.control(s.wfr.WriteSettingsAck)
}

// onHeaders takes the response headers (the call was accepted) or the
// trailers, whose status ends the stream.
func (s *msgStream) onHeaders(f *http2.MetaHeadersFrame) {
	if gs := f.PseudoValue("status"); gs != "" && gs != "200" {
		s.fail(status.Errorf(codes.Unavailable, "raftnode: peer answered HTTP status %s", gs))
		return
	}
	var (
		code    = codes.Unknown
		msg     string
		hasCode bool
	)
	for _, hf := range f.RegularFields() {
		switch hf.Name {
		case "grpc-status":
			if c, err := strconv.ParseUint(hf.Value, 10, 32); err == nil {
				code, hasCode = codes.Code(c), true
			}
		case "grpc-message":
			msg = decodeGRPCMessage(hf.Value)
		}
	}
	if !hasCode && !f.StreamEnded() {
		s.mu.Lock()
		if !s.gotHeader {
			s.gotHeader = true
			close(s.header)
		}
		s.mu.Unlock()
		return
	}
	if !hasCode || code == codes.OK {
		s.fail(status.Error(codes.Unavailable, "raftnode: peer closed the stream"))
		return
	}
	s.fail(status.Error(code, msg))
}

// decodeGRPCMessage undoes grpc-message's percent-encoding.
func decodeGRPCMessage(v string) string {
	if !strings.Contains(v, "%") {
		return v
	}
	out := make([]byte, 0, len(v))
	for i := 0; i < len(v); i++ {
		if v[i] == '%' && i+2 < len(v) {
			if n, err := strconv.ParseUint(v[i+1:i+3], 16, 8); err == nil {
				out = append(out, byte(n))
				i += 2
				continue
			}
		}
		out = append(out, v[i])
	}
	return string(out)
}

// keepalive pings a connection that was silent for msgKeepaliveTime and
// fails it when nothing (the ping's ack or anything else) arrives within
// msgKeepaliveWait (grpc-go's client keepalive, as the peer connections
// had it). A sender blocked in a write to a peer that stopped reading
// holds the write lock: the ping cannot go, and the connection fails when
// the lock stays held for msgKeepaliveWait, which ends the write.
func (s *msgStream) keepalive() {
	t := time.NewTimer(s.kaTime)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		if s.read.Swap(false) {
			t.Reset(s.kaTime)
			continue
		}
		if !s.ping() {
			return
		}
		t.Reset(s.kaWait)
		select {
		case <-s.done:
			return
		case <-s.pingAck:
			s.read.Store(false)
		case <-t.C:
			if !s.read.Swap(false) {
				s.fail(status.Error(codes.Unavailable, "raftnode: keepalive ping not acknowledged"))
				return
			}
		}
		t.Reset(s.kaTime)
	}
}

// ping writes a PING once the write lock is free; false: the connection
// failed (or the lock stayed held for s.kaWait: it is failed).
func (s *msgStream) ping() bool {
	deadline := time.Now().Add(s.kaWait)
	for !s.wmu.TryLock() {
		if time.Now().After(deadline) {
			s.fail(status.Error(codes.Unavailable, "raftnode: write to peer blocked past the keepalive timeout"))
			return false
		}
		select {
		case <-s.done:
			return false
		case <-time.After(10 * time.Millisecond):
		}
	}
	return s.writeControlLocked(func() error { return s.wfr.WritePing(false, [8]byte{}) })
}
