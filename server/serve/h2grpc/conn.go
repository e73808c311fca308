package h2grpc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Flow-control windows we grant a client: large, so that neither unary
// requests nor streams wait on WINDOW_UPDATEs in the common case (grpc-go
// starts at 64 KiB and grows by BDP estimation).
const (
	streamWindow = 1 << 20
	connWindow   = 8 << 20
	// highWater bounds a connection's unflushed output; a sender past it
	// waits for the flush.
	highWater = 1 << 20
	// pingStrikes is how many too-early pings a client gets before a
	// too_many_pings GOAWAY (grpc-go's maxPingStrikes).
	maxPingStrikes = 2
	// minBatch is the output below which the writer yields once before
	// writing (grpc-go's loopy writer does the same).
	minBatch = 16 << 10
	// noStreamPingTime is the shortest ping interval without active
	// streams when the policy does not permit such pings (grpc-go's).
	noStreamPingTime = 2 * time.Hour
)

var errConnClosed = status.Error(codes.Unavailable, "transport is closing")

// errBadMaxFrame: a SETTINGS_MAX_FRAME_SIZE out of range (RFC 9113 §6.5.2).
var errBadMaxFrame = errors.New("max frame size out of range")

// conn is one client connection.
type conn struct {
	s    *Server
	nc   net.Conn
	ctx  context.Context // carries the peer
	done chan struct{}   // closed by close
	fr   *http2.Framer   // reader side; the reader goroutine's own

	// read is set by the reader on every frame; keepalive clears it.
	read atomic.Bool
	// resetStrikes is set when we send headers or data: a client ping
	// after that is not a strike (grpc-go's resetPingStrikes).
	resetStrikes atomic.Bool
	// reader-owned ping enforcement state.
	lastPing    time.Time
	strikes     int
	connUnacked uint32 // received bytes not yet returned by a WINDOW_UPDATE
	// pingAck is signalled when the client acks our keepalive ping.
	pingAck chan struct{}
	br      *bufio.Reader
	// pending are streaming calls to start before the reader blocks.
	pending []*stream
	// ends are inline calls whose OK trailers wait for the reader to
	// have read what is buffered (inlinestream.go).
	ends []*stream
	// The reader's header decoding state.
	hcache headerCache
	hdec   *hpack.Decoder
	hdr    headerBlock
	fields []hpack.HeaderField

	mu    sync.Mutex
	cond  *sync.Cond // window grew, output flushed, stream ended or conn closed
	wbuf  []byte     // encoded frames waiting for a flush
	spare []byte
	wfr   *http2.Framer // writes into wbuf
	henc  *hpack.Encoder
	hbuf  bytes.Buffer
	// flushing: a goroutine is writing wbuf out; it loops until wbuf is empty.
	flushing bool
	kick     chan struct{} // wakes the writer goroutine
	closed   bool
	// closeAfterFlush: close once everything queued is written (a
	// fatal GOAWAY).
	closeAfterFlush bool
	streams         map[uint32]*stream
	running         int // unary calls dispatched and not yet answered
	maxStreamID     uint32
	goingAway       bool
	lastStreamID    uint32 // last stream we serve after a GOAWAY
	sendWindow      int64  // connection send window
	peerWindow      int64  // client's SETTINGS_INITIAL_WINDOW_SIZE
	peerMaxFrame    int
	idleSince       time.Time // no streams since (zero: streams open)

	// The DATA frame that ends wbuf, if dataEnd == len(wbuf) > 0: its
	// header's offset and its stream (coalesce.go).
	dataHdr, dataEnd int
	dataID           uint32
}

func newConn(s *Server, nc net.Conn, auth credentials.AuthInfo) *conn {
	c := &conn{
		s: s, nc: nc, done: make(chan struct{}), kick: make(chan struct{}, 1), pingAck: make(chan struct{}, 1),
		streams: map[uint32]*stream{}, sendWindow: 65535, peerWindow: 65535, peerMaxFrame: 16384,
		idleSince: time.Now(),
	}
	c.cond = sync.NewCond(&c.mu)
	c.ctx = peer.NewContext(context.Background(), &peer.Peer{Addr: nc.RemoteAddr(), LocalAddr: nc.LocalAddr(), AuthInfo: auth})
	c.br = bufio.NewReaderSize(nc, 32<<10)
	c.fr = http2.NewFramer(nil, c.br)
	// One DataFrame reused for every DATA frame: onData copies the
	// payload before the next read.
	c.fr.SetReuseFrames()
	// Header blocks are decoded here rather than by the framer's
	// ReadMetaHeaders, into one field slice reused for every request
	// (the framer's grew a new one per request: ~8% of a range's CPU).
	c.hdec = hpack.NewDecoder(4096, c.emitField)
	c.hdec.SetMaxStringLength(maxHeaderList)
	c.wfr = http2.NewFramer((*wsink)(c), nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	// No dynamic table: every header block we send is stateless, so the
	// common ones are encoded once (blocks.go).
	c.henc.SetMaxDynamicTableSizeLimit(0)
	return c
}

// wsink appends the framer's output to wbuf (c.mu held).
type wsink conn

func (w *wsink) Write(p []byte) (int, error) {
	w.wbuf = append(w.wbuf, p...)
	return len(p), nil
}

// serve reads the connection until it ends.
func (c *conn) serve() {
	defer func() {
		c.mu.Lock()
		linger := c.closeAfterFlush
		c.mu.Unlock()
		if linger {
			// Let the writer get the GOAWAY out first.
			select {
			case <-c.done:
			case <-time.After(time.Second):
			}
		}
		c.close(nil)
	}()
	go c.writer()
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var preface [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(c.nc, preface[:]); err != nil || string(preface[:]) != http2.ClientPreface {
		return
	}
	c.nc.SetReadDeadline(time.Time{})
	c.mu.Lock()
	settings := []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: streamWindow}}
	if n := c.s.o.MaxConcurrentStreams; n != 1<<32-1 {
		settings = append(settings, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: n})
	}
	c.wfr.WriteSettings(settings...)
	c.wfr.WriteWindowUpdate(0, connWindow-65535)
	c.kickLocked()
	c.mu.Unlock()
	go c.keepalive()
	for {
		if len(c.pending)+len(c.ends) > 0 && !c.frameBuffered() {
			c.finishEnds()
			c.dispatchPending()
		}
		f, err := c.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				c.mu.Lock()
				c.resetLocked(se.StreamID, se.Code)
				c.kickLocked()
				c.mu.Unlock()
				continue
			}
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				c.fatal(http2.ErrCode(ce), nil)
			}
			return
		}
		if !c.read.Load() {
			// Stored only when false: a store each frame would take
			// the cache line from the other cores every time.
			c.read.Store(true)
		}
		switch f := f.(type) {
		case *http2.HeadersFrame:
			c.hdr = headerBlock{id: f.StreamID, end: f.StreamEnded()}
			frag := f.HeaderBlockFragment()
			if f.HeadersEnded() {
				if rq := c.hcache.get(frag); rq != nil {
					c.onHeaders(c.hdr.id, rq, c.hdr.end)
					continue
				}
				c.hdr.cacheable = indexedOnly(frag)
			}
			if !c.hdr.cacheable {
				c.hcache.clear()
			}
			c.fields = c.fields[:0]
			if !c.headerFragment(frag, f.HeadersEnded()) {
				return
			}
		case *http2.ContinuationFrame:
			// The framer has checked that it continues the open block.
			if !c.headerFragment(f.HeaderBlockFragment(), f.HeadersEnded()) {
				return
			}
		case *http2.DataFrame:
			c.onData(f)
		case *http2.WindowUpdateFrame:
			c.onWindowUpdate(f)
		case *http2.SettingsFrame:
			if err := c.onSettings(f); err != nil {
				code := http2.ErrCodeFlowControl
				if err == errBadMaxFrame {
					code = http2.ErrCodeProtocol
				}
				c.fatal(code, nil)
				return
			}
		case *http2.PingFrame:
			if !c.onPing(f) {
				return
			}
		case *http2.RSTStreamFrame:
			c.onReset(f)
		case *http2.GoAwayFrame:
			// The client will open no new streams; running ones finish.
		case *http2.PushPromiseFrame:
			c.fatal(http2.ErrCodeProtocol, nil)
			return
		}
	}
}

// frameBuffered reports whether a whole frame is buffered, so the next
// ReadFrame will not wait on the network (the 24-bit length leads the
// 9-byte frame header).
func (c *conn) frameBuffered() bool {
	n := c.br.Buffered()
	if n < 9 {
		return false
	}
	h, _ := c.br.Peek(3)
	return n >= 9+(int(h[0])<<16|int(h[1])<<8|int(h[2]))
}

// dispatchPending starts the streaming calls whose headers were read.
func (c *conn) dispatchPending() {
	c.mu.Lock()
	for i, st := range c.pending {
		if !st.reset && !c.closed {
			c.s.dispatch(st)
		}
		c.pending[i] = nil
	}
	c.pending = c.pending[:0]
	c.mu.Unlock()
}

// headerBlock is the header block being read.
type headerBlock struct {
	id   uint32
	end  bool   // END_STREAM on its HEADERS frame
	size uint32 // RFC 7541 size of the fields so far
	// cacheable: one HEADERS frame of indexed fields only (headerCache).
	cacheable bool
}

// maxHeaderList bounds a request's header list (grpc-go's default).
const maxHeaderList = 16 << 20

func (c *conn) emitField(hf hpack.HeaderField) {
	c.hdr.size += hf.Size()
	if c.hdr.size <= maxHeaderList {
		c.fields = append(c.fields, hf)
	}
}

// headerFragment decodes part of a header block, and once it is whole
// starts the call; false: the connection is being closed.
func (c *conn) headerFragment(frag []byte, last bool) bool {
	if _, err := c.hdec.Write(frag); err != nil {
		c.fatal(http2.ErrCodeCompression, nil)
		return false
	}
	if !last {
		return true
	}
	if err := c.hdec.Close(); err != nil {
		c.fatal(http2.ErrCodeCompression, nil)
		return false
	}
	if c.hdr.size > maxHeaderList {
		// Too large: refused like grpc-go's (the framer's check).
		c.mu.Lock()
		c.resetLocked(c.hdr.id, http2.ErrCodeProtocol)
		c.kickLocked()
		c.mu.Unlock()
		return true
	}
	rq := c.parseRequest(c.fields)
	if c.hdr.cacheable {
		c.hcache.put(frag, rq)
	}
	c.onHeaders(c.hdr.id, rq, c.hdr.end)
	return true
}

// fatal sends a GOAWAY with code and closes the connection after it.
func (c *conn) fatal(code http2.ErrCode, debug []byte) {
	c.mu.Lock()
	if !c.closed {
		c.wfr.WriteGoAway(c.maxStreamID, code, debug)
		c.closeAfterFlush = true
		c.kickLocked()
	}
	c.mu.Unlock()
}

// close ends the connection: every stream's context is canceled.
func (c *conn) close(error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	close(c.done)
	c.kickWriter()
	c.nc.Close()
	for id, st := range c.streams {
		st.reset = true
		st.cancel()
		delete(c.streams, id)
		st.inlineResetLocked()
	}
	c.cond.Broadcast()
}

// goAway starts a graceful close: no new streams; the connection closes
// once the open ones are done.
func (c *conn) goAway() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.goingAway || c.closed {
		return
	}
	c.goingAway = true
	c.lastStreamID = c.maxStreamID
	c.wfr.WriteGoAway(c.lastStreamID, http2.ErrCodeNo, nil)
	c.kickLocked()
}

// noteSent records that we sent headers or data (resetStrikes), storing
// only when it was not set: a store per call would take the cache line
// from the other cores every time.
func (c *conn) noteSent() {
	if !c.resetStrikes.Load() {
		c.resetStrikes.Store(true)
	}
}

// kickLocked makes sure queued output gets written: by the flusher in
// progress, or the writer goroutine.
func (c *conn) kickLocked() {
	if c.flushing {
		return
	}
	c.kickWriter()
}

// kickWriter wakes the writer goroutine; c.mu need not be held. A call's
// output is written by the writer, which batches the output of every call
// that answers meanwhile into one write (as grpc-go's loopy writer does;
// measured: ~0.7 writes per unary call when each wrote its own answer,
// ~0.14 batched). A sender never holds more than highWater unwritten (send
// waits for the writer).
func (c *conn) kickWriter() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// flushLocked writes queued output on the calling goroutine unless
// another is already at it (it will write ours too); c.mu is held and
// stays held, but is released during the write.
func (c *conn) flushLocked() {
	if c.flushing {
		return
	}
	c.flushing = true
	for len(c.wbuf) > 0 && !c.closed {
		buf := c.wbuf
		c.wbuf = c.spare[:0]
		c.dataEnd = 0 // the frame left with buf
		c.mu.Unlock()
		_, err := c.nc.Write(buf)
		c.mu.Lock()
		if cap(buf) <= 4*highWater {
			c.spare = buf[:0]
		} else {
			c.spare = nil
		}
		c.cond.Broadcast()
		if err != nil {
			c.flushing = false
			c.mu.Unlock()
			c.close(err)
			c.mu.Lock()
			return
		}
	}
	c.flushing = false
	if !c.closed && (c.closeAfterFlush || c.goingAway && len(c.streams) == 0) {
		// Drained (or a fatal GOAWAY is out): the reader sees the close.
		c.mu.Unlock()
		c.close(nil)
		c.mu.Lock()
	}
}

// writer flushes output queued by the reader and by senders waiting
// for flow control.
func (c *conn) writer() {
	// It waits on kick alone (close kicks it too): a select with done
	// would cost every wake-up twice the channel locking.
	for range c.kick {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return
		}
		if len(c.wbuf) < minBatch {
			// A small batch: let the calls about to answer add theirs.
			c.mu.Unlock()
			runtime.Gosched()
			c.mu.Lock()
		}
		c.flushLocked()
		c.mu.Unlock()
	}
}

// resetLocked sends RST_STREAM and forgets the stream.
func (c *conn) resetLocked(id uint32, code http2.ErrCode) {
	c.wfr.WriteRSTStream(id, code)
	if st := c.streams[id]; st != nil {
		st.reset = true
		c.removeLocked(st)
		st.cancel()
		st.inlineResetLocked()
	}
}

func (c *conn) removeLocked(st *stream) {
	delete(c.streams, st.id)
	if len(c.streams) == 0 {
		c.idleSince = time.Now()
		if c.goingAway {
			c.kickLocked()
		}
	}
	c.cond.Broadcast()
}

func (c *conn) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		switch s.ID {
		case http2.SettingInitialWindowSize:
			if s.Val > 1<<31-1 {
				return errors.New("window too large")
			}
			delta := int64(s.Val) - c.peerWindow
			c.peerWindow = int64(s.Val)
			for _, st := range c.streams {
				st.sendWindow += delta
			}
		case http2.SettingMaxFrameSize:
			// NB: out of RFC 9113's range a reply would be cut into
			// empty frames forever (below) or a coalesced DATA frame's
			// 24-bit length would overflow (above).
			if s.Val < 1<<14 || s.Val > 1<<24-1 {
				return errBadMaxFrame
			}
			c.peerMaxFrame = int(s.Val)
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.wfr.WriteSettingsAck()
	c.kickLocked()
	c.cond.Broadcast()
	return nil
}

func (c *conn) onWindowUpdate(f *http2.WindowUpdateFrame) {
	const maxWindow = 1<<31 - 1 // RFC 9113 §6.9.1
	c.mu.Lock()
	if f.StreamID == 0 {
		c.sendWindow += int64(f.Increment)
		if c.sendWindow > maxWindow {
			c.mu.Unlock()
			c.fatal(http2.ErrCodeFlowControl, nil)
			return
		}
	} else if st := c.streams[f.StreamID]; st != nil {
		st.sendWindow += int64(f.Increment)
		if st.sendWindow > maxWindow {
			c.resetLocked(f.StreamID, http2.ErrCodeFlowControl)
			c.kickLocked()
		}
	}
	c.cond.Broadcast()
	c.mu.Unlock()
}

// onPing acks a ping and enforces the keepalive policy as grpc-go does;
// false: the connection is being closed for too many pings.
func (c *conn) onPing(f *http2.PingFrame) bool {
	if f.IsAck() {
		select {
		case c.pingAck <- struct{}{}:
		default:
		}
		return true
	}
	c.mu.Lock()
	c.wfr.WritePing(true, f.Data)
	c.kickLocked()
	active := len(c.streams)
	c.mu.Unlock()
	now := time.Now()
	last := c.lastPing
	c.lastPing = now
	if c.resetStrikes.CompareAndSwap(true, false) {
		c.strikes = 0
		return true
	}
	ep := c.s.o.Enforcement
	if active == 0 && !ep.PermitWithoutStream {
		if last.Add(noStreamPingTime).After(now) {
			c.strikes++
		}
	} else if last.Add(ep.MinTime).After(now) {
		c.strikes++
	}
	if c.strikes > maxPingStrikes {
		c.fatal(http2.ErrCodeEnhanceYourCalm, []byte("too_many_pings"))
		return false
	}
	return true
}

func (c *conn) onReset(f *http2.RSTStreamFrame) {
	c.mu.Lock()
	if st := c.streams[f.StreamID]; st != nil {
		st.reset = true
		c.removeLocked(st)
		st.cancel()
		st.inlineResetLocked()
	}
	c.mu.Unlock()
}

// onHeaders starts a call.
func (c *conn) onHeaders(id uint32, rq *request, end bool) {
	c.mu.Lock()
	if st := c.streams[id]; st != nil {
		// Trailers from a client: only an end of stream means anything.
		c.mu.Unlock()
		if end {
			st.endRecv()
		}
		return
	}
	if id%2 == 0 || id <= c.maxStreamID {
		c.mu.Unlock()
		c.fatal(http2.ErrCodeProtocol, nil)
		return
	}
	c.maxStreamID = id
	if c.goingAway && id > c.lastStreamID || c.closed {
		// After our GOAWAY: the client retries it elsewhere.
		c.mu.Unlock()
		return
	}
	if uint32(len(c.streams)) >= c.s.o.MaxConcurrentStreams {
		c.resetLocked(id, http2.ErrCodeRefusedStream)
		c.kickLocked()
		c.mu.Unlock()
		return
	}
	if rq.abort != nil {
		c.earlyAbortLocked(id, rq.abort, !end)
		c.mu.Unlock()
		return
	}
	// Made under c.mu, which the checks above took: one lock a request
	// fewer, and the lock is contended (the calls answer under it).
	st := c.newStream(id, rq, end)
	c.streams[id] = st
	c.idleSince = time.Time{}
	if st.inl != nil {
		c.mu.Unlock()
		st.inlineOpen()
		return
	}
	defer c.mu.Unlock()
	if st.m.unary == nil {
		// Started once the reader has nothing more to read: the request
		// that usually follows its headers is then already there, and
		// the call does not park in RecvMsg to be woken for it.
		c.pending = append(c.pending, st)
	} else if st.clientDone {
		st.dispatched = true
		c.running++
		c.s.dispatch(st)
	}
}

// callAbort is a call refused before it starts (grpc-go's early abort).
type callAbort struct {
	httpStatus int
	st         *status.Status
	rstCode    http2.ErrCode // when not zero: RST_STREAM alone
	rst        bool
}

// request is what a request's header block says. The reader keeps those
// of recent blocks (headerCache); a stream only reads it.
type request struct {
	path, subtype, recvCompress string
	timeout                     time.Duration
	timeoutSet                  bool
	// md is the call's incoming metadata, shared by the calls of the same
	// block: grpc-go's accessors hand out copies, never the map itself.
	md    metadata.MD
	m     *method
	abort *callAbort // the call is refused (then only abort is set)
	// vals backs md's one-value slices for a request's usual few
	// (:authority, content-type, user-agent, client-api-version); past it
	// append moves on to a new array, and slices already taken stay.
	vals [4]string
}

// parseRequest reads a request's header fields.
func (c *conn) parseRequest(fields []hpack.HeaderField) *request {
	rq := &request{}
	var (
		ctype, httpMethod string
		isGRPC            bool
		headerErr         *status.Status
		n                 int
	)
	for _, hf := range fields {
		if !isReserved(hf.Name) {
			n++ // the hint: above 8 (len(fields) often is) a map gets a table, not one group
		}
	}
	md := make(metadata.MD, n)
	vals := rq.vals[:0]
	add := func(k, v string) {
		if old, ok := md[k]; ok {
			md[k] = append(old[:len(old):len(old)], v)
			return
		}
		vals = append(vals, v)
		md[k] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	for _, hf := range fields {
		switch hf.Name {
		case "content-type":
			if sub, ok := contentSubtype(hf.Value); ok {
				isGRPC = true
				rq.subtype = sub
				add(hf.Name, hf.Value)
			} else {
				ctype = hf.Value
			}
		case ":path":
			rq.path = hf.Value
		case ":method":
			httpMethod = hf.Value
		case "grpc-encoding":
			rq.recvCompress = hf.Value
		case "grpc-timeout":
			rq.timeoutSet = true
			var err error
			if rq.timeout, err = decodeTimeout(hf.Value); err != nil {
				headerErr = status.Newf(codes.Internal, "malformed grpc-timeout: %v", err)
			}
		case "connection":
			return &request{abort: &callAbort{rstCode: http2.ErrCodeProtocol}}
		default:
			if isReserved(hf.Name) {
				continue
			}
			v := hf.Value
			if len(hf.Name) > 4 && hf.Name[len(hf.Name)-4:] == "-bin" {
				var err error
				if v, err = decodeBin(hf.Value); err != nil {
					headerErr = status.Newf(codes.Internal, "malformed binary metadata %q in header %q: %v", hf.Value, hf.Name, err)
					continue
				}
			}
			add(hf.Name, v)
		}
	}
	abort := func(a *callAbort) *request { return &request{abort: a} }
	if httpMethod != "POST" {
		return abort(&callAbort{rstCode: http2.ErrCodeProtocol})
	}
	if len(md[":authority"]) > 1 || len(md["host"]) > 1 {
		return abort(&callAbort{httpStatus: 400, st: status.Newf(codes.Internal,
			"num values of :authority: %v, num values of host: %v, both must only have 1 value as per HTTP/2 spec",
			len(md[":authority"]), len(md["host"]))})
	}
	if !isGRPC {
		return abort(&callAbort{httpStatus: 415, st: status.Newf(codes.InvalidArgument, "invalid gRPC request content-type %q", ctype)})
	}
	if headerErr != nil {
		return abort(&callAbort{httpStatus: 400, st: headerErr})
	}
	if len(md[":authority"]) == 0 {
		if h, ok := md["host"]; ok {
			md[":authority"] = h
		}
	}
	delete(md, "host")
	if len(md[":authority"]) == 0 {
		return abort(&callAbort{httpStatus: 400, st: status.New(codes.Internal, "no host or :authority header present")})
	}
	m, msg := c.s.lookup(rq.path)
	if m == nil {
		// grpc-go answers an unknown method after the headers, with a
		// normal (trailers-only) response.
		return abort(&callAbort{httpStatus: 200, st: status.New(codes.Unimplemented, msg)})
	}
	rq.m, rq.md = m, md
	return rq
}

// newStream makes the stream of a request that was not refused.
func (c *conn) newStream(id uint32, rq *request, end bool) *stream {
	st := &stream{c: c, id: id, clientDone: end, m: rq.m, path: rq.path, subtype: rq.subtype, recvCompress: rq.recvCompress}
	if rq.m.stream != nil {
		st.granted = streamWindow
		if st.inl = c.s.inlineHandler(rq); st.inl == nil {
			st.rsig = make(chan struct{}, 1)
		} else {
			// Set before the stream is shared: GracefulStop's
			// drainInline may end it before the reader opens it.
			st.inlStart = time.Now()
		}
	}
	st.cctx.parent, st.cctx.st, st.cctx.md = c.ctx, st, rq.md
	if rq.timeoutSet {
		st.cctx.setDeadline(rq.timeout)
	}
	st.ctx = st.cctx.withValues()
	st.sendWindow = c.peerWindow // the reader's own: only it changes it
	return st
}

// contentSubtype splits application/grpc[+sub] or [;params].
func contentSubtype(ct string) (string, bool) {
	const base = "application/grpc"
	if len(ct) < len(base) || ct[:len(base)] != base {
		return "", false
	}
	if len(ct) == len(base) {
		return "", true
	}
	switch ct[len(base)] {
	case '+', ';':
		return ct[len(base)+1:], true
	}
	return "", false
}

// earlyAbortLocked answers a refused call with a trailers-only response.
func (c *conn) earlyAbortLocked(id uint32, a *callAbort, rst bool) {
	if a.rstCode != 0 {
		c.wfr.WriteRSTStream(id, a.rstCode)
		c.kickLocked()
		return
	}
	c.hbuf.Reset()
	c.writeFieldLocked(":status", httpStatusText(a.httpStatus))
	c.writeFieldLocked("content-type", "application/grpc")
	c.writeStatusFieldsLocked(a.st)
	c.writeHeaderBlockLocked(id, true)
	if rst {
		c.wfr.WriteRSTStream(id, http2.ErrCodeNo)
	}
	c.kickLocked()
}

func httpStatusText(code int) string {
	switch code {
	case 200:
		return "200"
	case 400:
		return "400"
	case 415:
		return "415"
	}
	return "500"
}

// onData queues a request's bytes for its call.
func (c *conn) onData(f *http2.DataFrame) {
	n := f.Header().Length
	c.connUnacked += n
	c.mu.Lock()
	if c.connUnacked >= connWindow/4 {
		c.wfr.WriteWindowUpdate(0, c.connUnacked)
		c.connUnacked = 0
		c.kickLocked()
	}
	st := c.streams[f.StreamID]
	if st == nil {
		if f.StreamID > c.maxStreamID {
			c.mu.Unlock()
			c.fatal(http2.ErrCodeProtocol, nil)
			return
		}
		// A stream that ended or was reset; its bytes count only for
		// the connection window (done above).
		c.mu.Unlock()
		return
	}
	if st.m.unary != nil {
		// Under the same lock: one fewer a request. The hand-off to a
		// worker (which may wake a thread: a futex call) comes after it.
		run := st.onUnaryDataLocked(f.Data(), n-uint32(len(f.Data())), f.StreamEnded())
		c.mu.Unlock()
		if run {
			if c.s.inline(st) {
				st.onReader = true
				st.run()
			} else if !c.s.deferCall(st) {
				c.s.dispatch(st)
			}
		}
		return
	}
	c.mu.Unlock()
	st.onData(f.Data(), n-uint32(len(f.Data())), f.StreamEnded())
}

// keepalive pings an idle client, closes a connection whose pings go
// unanswered, and ends connections idle or old past the configured limits.
func (c *conn) keepalive() {
	ka := c.s.o.Keepalive
	ping := time.NewTimer(ka.Time)
	defer ping.Stop()
	var idle, age, grace <-chan time.Time
	if ka.MaxConnectionIdle > 0 {
		t := time.NewTimer(ka.MaxConnectionIdle)
		defer t.Stop()
		idle = t.C
	}
	if ka.MaxConnectionAge > 0 {
		// ±10% jitter, as grpc-go, so connections opened together do
		// not all go away together.
		d := ka.MaxConnectionAge + time.Duration(float64(ka.MaxConnectionAge)*(rand.Float64()*0.2-0.1))
		age = time.After(d)
	}
	var pingOut <-chan time.Time
	for {
		select {
		case <-c.done:
			return
		case <-ping.C:
			if c.read.Swap(false) {
				ping.Reset(ka.Time)
				continue
			}
			c.mu.Lock()
			c.wfr.WritePing(false, [8]byte{})
			c.kickLocked()
			c.mu.Unlock()
			pingOut = time.After(ka.Timeout)
		case <-c.pingAck:
			pingOut = nil
			ping.Reset(ka.Time)
		case <-pingOut:
			if c.read.Swap(false) {
				// Something arrived; the ack may be behind it.
				pingOut = nil
				ping.Reset(ka.Time)
				continue
			}
			c.close(errors.New("keepalive ping not acknowledged"))
			return
		case <-idle:
			c.mu.Lock()
			since := c.idleSince
			c.mu.Unlock()
			if !since.IsZero() && time.Since(since) >= ka.MaxConnectionIdle {
				c.goAway()
				idle = nil
				continue
			}
			wait := ka.MaxConnectionIdle
			if !since.IsZero() {
				wait -= time.Since(since)
			}
			idle = time.After(wait)
		case <-age:
			age = nil
			c.goAway()
			if ka.MaxConnectionAgeGrace > 0 {
				grace = time.After(ka.MaxConnectionAgeGrace)
			}
		case <-grace:
			c.close(errors.New("max connection age grace elapsed"))
			return
		}
	}
}
