package h2grpc

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// stream is one call. The fields under "c.mu" are the connection's
// lock's; the receive side has its own.
type stream struct {
	c    *conn
	id   uint32
	m    *method
	path string
	// ctx is what the handler gets: cctx, under value contexts only when
	// grpc-go's keys are unknown (callctx.go).
	ctx  context.Context
	cctx callCtx
	// subtype is the request's content-subtype ("" for application/grpc).
	subtype      string
	recvCompress string

	// c.mu:
	sendWindow   int64
	headerSent   bool
	done         bool // trailers written
	reset        bool // RST_STREAM either way, or the connection closed
	header       metadata.MD
	trailer      metadata.MD
	sendCompress string
	// partial: a message is partly written, its sender waiting for room.
	partial bool

	// dispatched: a unary call counted in c.running.
	dispatched bool
	// onReader: a unary call run by the connection's reader (inline.go).
	onReader bool
	// clientDone: END_STREAM received. Set by the reader; read by the
	// call under rmu (and before dispatch for unary calls).
	clientDone bool

	rmu sync.Mutex
	// rbuf holds received bytes not yet consumed; a unary call's whole
	// request.
	rbuf []byte
	// rinline holds a small unary request (a Range's): one allocation a
	// call fewer. Never reused, so a message decoded from it may keep it.
	rinline [64]byte
	// recvd counts a unary request's bytes since the last stream
	// WINDOW_UPDATE.
	recvd uint32
	// A streaming call's flow control: bytes received, bytes consumed
	// (read by the call, or padding) and window granted, all since the
	// start (granted begins at streamWindow).
	rtotal, consumed, granted int64
	rsig                      chan struct{} // a streaming call's wakeup; cap 1

	// inl answers the messages of a call run by the reader
	// (inlinestream.go); set before the stream is shared.
	inl      StreamHandler
	inlStart time.Time
	// inlBusy (rmu): a goroutine has the stream, not the reader.
	inlBusy  bool
	inlEnded atomic.Bool // Ended was called
}

// onUnaryDataLocked is onData for a unary call, with c.mu held: the
// request is buffered until END_STREAM, then the call is to run, which
// the caller does (dispatch) once it has released c.mu; an oversized
// request is refused as soon as its length prefix says so.
func (st *stream) onUnaryDataLocked(p []byte, pad uint32, end bool) (run bool) {
	c := st.c
	if st.clientDone {
		return false
	}
	if st.rbuf == nil && len(p) <= len(st.rinline) {
		st.rbuf = st.rinline[:0]
	}
	st.rbuf = append(st.rbuf, p...)
	st.recvd += uint32(len(p)) + pad
	if len(st.rbuf) >= 5 {
		if n := int(binary.BigEndian.Uint32(st.rbuf[1:5])); n > c.s.o.MaxRecvMsgSize {
			st.clientDone = end
			// On the reader: queue the answer, never write inline.
			st.writeTrailersLocked(status.Newf(codes.ResourceExhausted, "grpc: received message larger than max (%d vs. %d)", n, c.s.o.MaxRecvMsgSize))
			c.kickLocked()
			return false
		}
	}
	if st.recvd >= streamWindow/2 && !end {
		// A large request: the call consumes it all at once.
		c.wfr.WriteWindowUpdate(st.id, st.recvd)
		st.recvd = 0
		c.kickLocked()
	}
	if end {
		st.clientDone = true
		if !st.reset && !st.done {
			st.dispatched = true
			c.running++
			return true
		}
	}
	return false
}

// onData is the reader handing over a DATA frame's payload; pad is its
// padding (flow-controlled but never read).
func (st *stream) onData(p []byte, pad uint32, end bool) {
	c := st.c
	if st.m.unary != nil {
		c.mu.Lock()
		run := st.onUnaryDataLocked(p, pad, end)
		c.mu.Unlock()
		if run {
			c.s.dispatch(st)
		}
		return
	}
	st.rmu.Lock()
	if st.clientDone {
		st.rmu.Unlock()
		return
	}
	st.rtotal += int64(len(p)) + int64(pad)
	st.consumed += int64(pad)
	if st.rtotal > st.granted {
		st.rmu.Unlock()
		c.mu.Lock()
		c.resetLocked(st.id, http2.ErrCodeFlowControl)
		c.kickLocked()
		c.mu.Unlock()
		return
	}
	st.rbuf = append(st.rbuf, p...)
	st.clientDone = end
	st.rmu.Unlock()
	if st.inl != nil {
		st.inlineRecv()
		return
	}
	st.signal()
}

// endRecv is END_STREAM on a HEADERS frame (client trailers).
func (st *stream) endRecv() {
	if st.m.unary != nil {
		st.onData(nil, 0, true)
		return
	}
	st.rmu.Lock()
	st.clientDone = true
	st.rmu.Unlock()
	if st.inl != nil {
		st.inlineRecv()
		return
	}
	st.signal()
}

func (st *stream) signal() {
	select {
	case st.rsig <- struct{}{}:
	default:
	}
}

// cancel cancels the call's context.
func (st *stream) cancel() { st.cctx.cancel() }

// run is the call, on a worker.
func (st *stream) run() {
	if st.m.unary != nil {
		st.runUnary()
	} else {
		st.runStream()
	}
}

// statusOf is the status an application error becomes, as grpc-go's.
func statusOf(err error) *status.Status {
	if s, ok := status.FromError(err); ok {
		return s
	}
	return status.FromContextError(err)
}

func (st *stream) runUnary() {
	s := st.c.s
	decomp, err := st.decompressor()
	if err != nil {
		st.finish(status.Convert(err))
		return
	}
	data, err := st.takeMsg(st.rbuf, decomp)
	if err != nil {
		st.finish(status.Convert(err))
		return
	}
	st.rbuf = nil
	dec := func(v any) error { return s.unmarshal(data, v) }
	reply, appErr := st.m.unary(st.m.impl, st.ctx, dec, s.o.UnaryInterceptor)
	if appErr != nil {
		st.finish(statusOf(appErr))
		return
	}
	if err := st.send(reply, true); err != nil {
		if err == errWouldWait {
			st.sendLater(reply)
			return
		}
		st.finish(statusOf(err))
	}
}

func (st *stream) runStream() {
	s := st.c.s
	if _, err := st.decompressor(); err != nil {
		st.finish(status.Convert(err))
		return
	}
	ss := &serverStream{st}
	var err error
	if s.o.StreamInterceptor != nil {
		err = s.o.StreamInterceptor(st.m.impl, ss, &st.m.sinfo, st.m.stream.Handler)
	} else {
		err = st.m.stream.Handler(st.m.impl, ss)
	}
	if err != nil {
		st.finish(statusOf(err))
		return
	}
	st.finish(status.New(codes.OK, ""))
}

// decompressor is the compressor of the request's grpc-encoding; an
// unknown one fails the call as grpc-go's server does. A known one is
// used for the response as well.
func (st *stream) decompressor() (encoding.Compressor, error) {
	rc := st.recvCompress
	if rc == "" || rc == "identity" {
		return nil, nil
	}
	comp := encoding.GetCompressor(rc)
	if comp == nil {
		return nil, status.Errorf(codes.Unimplemented, "grpc: Decompressor is not installed for grpc-encoding %q", rc)
	}
	st.c.mu.Lock()
	st.sendCompress = rc
	st.c.mu.Unlock()
	return comp, nil
}

// takeMsg parses one length-prefixed message at the start of b.
func (st *stream) takeMsg(b []byte, decomp encoding.Compressor) ([]byte, error) {
	max := st.c.s.o.MaxRecvMsgSize
	if len(b) == 0 {
		return nil, io.EOF
	}
	if len(b) < 5 {
		return nil, io.ErrUnexpectedEOF
	}
	n := int(binary.BigEndian.Uint32(b[1:5]))
	if n > max {
		return nil, status.Errorf(codes.ResourceExhausted, "grpc: received message larger than max (%d vs. %d)", n, max)
	}
	if len(b) < 5+n {
		return nil, io.ErrUnexpectedEOF
	}
	msg := b[5 : 5+n]
	switch b[0] {
	case 0:
		return msg, nil
	case 1:
		if decomp == nil {
			return nil, status.Error(codes.Internal, "grpc: compressed flag set with identity or empty encoding")
		}
		r, err := decomp.Decompress(bytes.NewReader(msg))
		if err != nil {
			return nil, status.Errorf(codes.Internal, "grpc: failed to decompress the received message: %v", err)
		}
		out, err := io.ReadAll(io.LimitReader(r, int64(max)+1))
		if err != nil {
			return nil, status.Errorf(codes.Internal, "grpc: failed to decompress the received message: %v", err)
		}
		if len(out) > max {
			return nil, status.Errorf(codes.ResourceExhausted, "grpc: received message after decompression larger than max %d", max)
		}
		return out, nil
	default:
		return nil, status.Errorf(codes.Internal, "grpc: received unexpected payload format %d", b[0])
	}
}

// unmarshal decodes a request message.
func (s *Server) unmarshal(data []byte, v any) error {
	var err error
	if s.bc != nil {
		err = s.bc.UnmarshalBytes(data, v)
	} else {
		err = s.o.Codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(data)}, v)
	}
	if err != nil {
		return status.Errorf(codes.Internal, "grpc: error unmarshalling request: %v", err)
	}
	return nil
}

var msgPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// send encodes m and writes it (with the response headers the first
// time); last: also the OK trailers, in the same write (a unary reply).
func (st *stream) send(m any, last bool) error {
	c, s := st.c, st.c.s
	// Read without c.mu: only decompressor, on this call's goroutine and
	// before the handler runs, writes it.
	comp := st.sendCompress
	bp := msgPool.Get().(*[]byte)
	buf, err := s.encodeMsg(append((*bp)[:0], 0, 0, 0, 0, 0), m, comp)
	// The whole buffer goes back to the pool (buf is resliced below).
	defer func(full []byte) {
		if cap(full) <= 1<<20 {
			*bp = full[:0]
			msgPool.Put(bp)
		}
	}(buf)
	if err != nil {
		return err
	}
	if n := len(buf) - 5; n > s.o.MaxSendMsgSize {
		return status.Errorf(codes.ResourceExhausted, "grpc: trying to send message larger than max (%d vs. %d)", n, s.o.MaxSendMsgSize)
	}
	binary.BigEndian.PutUint32(buf[1:5], uint32(len(buf)-5))

	// The writer is woken once c.mu is released (deferred before the
	// unlock, so run after it): the wake-up may cost a futex call.
	kick := false
	defer func() {
		if kick {
			c.kickWriter()
		}
	}()
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.done || st.reset || c.closed {
		return st.doneErr()
	}
	if st.onReader && !st.fitsLocked(len(buf)) {
		return errWouldWait // inline.go
	}
	if !st.headerSent {
		st.writeHeadersLocked()
	}
	for len(buf) > 0 {
		for !(st.done || st.reset || c.closed) && (st.sendWindow <= 0 || c.sendWindow <= 0 || len(c.wbuf) >= highWater) {
			if !c.flushing && len(c.wbuf) > 0 {
				c.flushLocked()
				continue
			}
			c.cond.Wait()
		}
		if st.done || st.reset || c.closed {
			return st.doneErr()
		}
		n := min(int64(len(buf)), st.sendWindow, c.sendWindow, int64(c.peerMaxFrame))
		c.writeDataLocked(st.id, buf[:n])
		c.noteSent()
		st.sendWindow -= n
		c.sendWindow -= n
		buf = buf[n:]
		st.partial = len(buf) > 0
	}
	if last {
		st.writeTrailersLocked(nil)
	}
	kick = !c.flushing
	return nil
}

// encodeMsg appends m's message frame (its 5-byte prefix already in buf),
// compressed with comp unless that is "", and sets the compressed flag.
func (s *Server) encodeMsg(buf []byte, m any, comp string) ([]byte, error) {
	if comp == "" && s.bc != nil {
		out, err := s.bc.AppendMarshal(buf, m)
		if err != nil {
			return buf, status.Errorf(codes.Internal, "grpc: error while marshaling: %v", err.Error())
		}
		return out, nil
	}
	payload, err := s.o.Codec.Marshal(m)
	if err != nil {
		return buf, status.Errorf(codes.Internal, "grpc: error while marshaling: %v", err.Error())
	}
	defer payload.Free()
	if comp == "" {
		for _, b := range payload {
			buf = append(buf, b.ReadOnlyData()...)
		}
		return buf, nil
	}
	w := &appendWriter{b: buf}
	cw, err := encoding.GetCompressor(comp).Compress(w)
	if err == nil {
		for _, b := range payload {
			if _, err = cw.Write(b.ReadOnlyData()); err != nil {
				break
			}
		}
		if err == nil {
			err = cw.Close()
		}
	}
	if err != nil {
		return buf, status.Errorf(codes.Internal, "grpc: error while compressing: %v", err.Error())
	}
	w.b[0] = 1
	return w.b, nil
}

type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }

func (st *stream) doneErr() error {
	if err := st.ctx.Err(); err != nil {
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Unavailable, "transport: the stream is done")
}

// finish ends the call with s (once): trailers, or a trailers-only
// response when nothing was sent; RST_STREAM when the client is still
// sending.
func (st *stream) finish(s *status.Status) {
	c := st.c
	c.mu.Lock()
	st.writeTrailersLocked(s)
	kick := !c.flushing
	c.mu.Unlock()
	if kick {
		c.kickWriter()
	}
}

// writeTrailersLocked writes the trailers (s nil: OK) and ends the stream.
func (st *stream) writeTrailersLocked(s *status.Status) {
	c := st.c
	if st.dispatched {
		st.dispatched = false
		c.running--
	}
	if st.done || st.reset || c.closed {
		st.cancel()
		return
	}
	st.done = true
	if st.partial {
		// Another goroutine's message is partly written (it waits for
		// window; GracefulStop ending an inline call): trailers would
		// end it cut short.
		c.wfr.WriteRSTStream(st.id, http2.ErrCodeCancel)
	} else if s == nil && st.trailer.Len() == 0 && st.headerSent {
		c.writeHeaderFrameLocked(st.id, blockTrailersOK, true)
	} else {
		if s == nil {
			s = statusOK
		}
		c.hbuf.Reset()
		if !st.headerSent && st.header.Len() > 0 {
			st.writeHeadersLocked()
			c.hbuf.Reset()
		}
		if !st.headerSent {
			c.writeFieldLocked(":status", "200")
			c.writeFieldLocked("content-type", contentType(st.subtype))
		}
		st.headerSent = true
		c.writeStatusFieldsLocked(s)
		if s.Proto() != nil && len(s.Proto().Details) > 0 {
			delete(st.trailer, "grpc-status-details-bin")
		}
		c.writeMDLocked(st.trailer)
		c.writeHeaderBlockLocked(st.id, true)
	}
	c.noteSent()
	if !st.partial && !st.clientDoneLocked() {
		c.wfr.WriteRSTStream(st.id, http2.ErrCodeNo)
	}
	if c.streams[st.id] == st {
		c.removeLocked(st)
	}
	st.cancel()
}

// clientDoneLocked reads clientDone; a unary call's is the reader's
// until dispatch, after which it no longer changes.
func (st *stream) clientDoneLocked() bool {
	if st.m.unary != nil {
		return st.clientDone
	}
	st.rmu.Lock()
	defer st.rmu.Unlock()
	return st.clientDone
}

var statusOK = status.New(codes.OK, "")

var errTruncated = status.Error(codes.Internal, io.ErrUnexpectedEOF.Error())

func contentType(sub string) string {
	if sub == "" {
		return "application/grpc"
	}
	return "application/grpc+" + sub
}

// writeHeadersLocked sends the response headers.
func (st *stream) writeHeadersLocked() {
	c := st.c
	st.headerSent = true
	c.noteSent()
	if st.header.Len() == 0 && st.sendCompress == "" && st.subtype == "" {
		c.writeHeaderFrameLocked(st.id, blockHeaders, false)
		return
	}
	c.hbuf.Reset()
	c.writeFieldLocked(":status", "200")
	c.writeFieldLocked("content-type", contentType(st.subtype))
	if st.sendCompress != "" {
		c.writeFieldLocked("grpc-encoding", st.sendCompress)
	}
	c.writeMDLocked(st.header)
	c.writeHeaderBlockLocked(st.id, false)
}

func (c *conn) writeFieldLocked(name, value string) {
	c.henc.WriteField(hpack.HeaderField{Name: name, Value: value})
}

func (c *conn) writeStatusFieldsLocked(s *status.Status) {
	c.writeFieldLocked("grpc-status", strconv.Itoa(int(s.Code())))
	c.writeFieldLocked("grpc-message", encodeMessage(s.Message()))
	if p := s.Proto(); p != nil && len(p.Details) > 0 {
		if b, err := proto.Marshal(p); err == nil {
			c.writeFieldLocked("grpc-status-details-bin", encodeBin(string(b)))
		}
	}
}

func (c *conn) writeMDLocked(md metadata.MD) {
	for k, vs := range md {
		if isReservedOut(k) {
			continue
		}
		for _, v := range vs {
			if len(k) > 4 && k[len(k)-4:] == "-bin" {
				v = encodeBin(v)
			}
			c.writeFieldLocked(k, v)
		}
	}
}

// writeHeaderBlockLocked sends hbuf as a header block.
func (c *conn) writeHeaderBlockLocked(id uint32, end bool) {
	c.writeHeaderFrameLocked(id, c.hbuf.Bytes(), end)
}

// writeHeaderFrameLocked sends a header block as HEADERS and, past the
// client's frame size, CONTINUATION frames.
func (c *conn) writeHeaderFrameLocked(id uint32, block []byte, end bool) {
	first := true
	for first || len(block) > 0 {
		n := min(len(block), c.peerMaxFrame)
		frag := block[:n]
		block = block[n:]
		if first {
			c.wfr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: frag, EndStream: end, EndHeaders: len(block) == 0})
			first = false
		} else {
			c.wfr.WriteContinuation(id, len(block) == 0, frag)
		}
	}
}

// The header blocks of almost every call, encoded once: without a
// dynamic table HPACK output depends on nothing but the fields.
var blockHeaders, blockTrailersOK = func() ([]byte, []byte) {
	var b bytes.Buffer
	e := hpack.NewEncoder(&b)
	e.SetMaxDynamicTableSizeLimit(0)
	e.WriteField(hpack.HeaderField{Name: "x", Value: "x"}) // emits the table size update
	b.Reset()
	e.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	e.WriteField(hpack.HeaderField{Name: "content-type", Value: "application/grpc"})
	h := bytes.Clone(b.Bytes())
	b.Reset()
	e.WriteField(hpack.HeaderField{Name: "grpc-status", Value: "0"})
	e.WriteField(hpack.HeaderField{Name: "grpc-message", Value: ""})
	return h, bytes.Clone(b.Bytes())
}()

// Method, SetHeader, SendHeader and SetTrailer make a stream the
// grpc.ServerTransportStream of its context (grpc.SetHeader and co.).
func (st *stream) Method() string { return st.path }

var errHeaderSent = status.Error(codes.Internal, "transport: SendHeader called multiple times")

func (st *stream) SetHeader(md metadata.MD) error {
	if md.Len() == 0 {
		return nil
	}
	st.c.mu.Lock()
	defer st.c.mu.Unlock()
	if st.headerSent || st.done {
		return errHeaderSent
	}
	st.header = metadata.Join(st.header, md)
	return nil
}

func (st *stream) SendHeader(md metadata.MD) error {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.headerSent || st.done {
		return errHeaderSent
	}
	if st.reset || c.closed {
		return st.doneErr()
	}
	st.header = metadata.Join(st.header, md)
	st.writeHeadersLocked()
	c.kickLocked()
	return nil
}

func (st *stream) SetTrailer(md metadata.MD) error {
	if md.Len() == 0 {
		return nil
	}
	st.c.mu.Lock()
	defer st.c.mu.Unlock()
	if st.done {
		return errHeaderSent
	}
	st.trailer = metadata.Join(st.trailer, md)
	return nil
}

// serverStream is a streaming call's grpc.ServerStream.
type serverStream struct{ *stream }

var _ grpc.ServerStream = serverStream{}

func (ss serverStream) Context() context.Context { return ss.ctx }

func (ss serverStream) SetTrailer(md metadata.MD) { ss.stream.SetTrailer(md) }

func (ss serverStream) SendMsg(m any) error { return ss.send(m, false) }

func (ss serverStream) RecvMsg(m any) error {
	st := ss.stream
	for {
		st.rmu.Lock()
		data, update, err := st.nextMsgLocked()
		st.rmu.Unlock()
		if update > 0 {
			st.windowUpdate(update)
		}
		if err != nil || data != nil {
			if err != nil {
				return err
			}
			return st.c.s.unmarshal(data, m)
		}
		select {
		case <-st.rsig:
		case <-st.ctx.Done():
			return status.FromContextError(st.ctx.Err()).Err()
		}
	}
}

// nextMsgLocked takes the next whole message (nil, nil: not yet) and
// says how much stream window to return to the client, which the caller
// does once rmu is released (c.mu nests outside it).
func (st *stream) nextMsgLocked() (_ []byte, update uint32, _ error) {
	b := st.rbuf
	if len(b) >= 5 {
		n := int(binary.BigEndian.Uint32(b[1:5]))
		if n > st.c.s.o.MaxRecvMsgSize {
			return nil, 0, status.Errorf(codes.ResourceExhausted, "grpc: received message larger than max (%d vs. %d)", n, st.c.s.o.MaxRecvMsgSize)
		}
		if len(b) >= 5+n {
			decomp, _ := st.compressorForRecv()
			msg, err := st.takeMsg(b[:5+n], decomp)
			if err != nil {
				return nil, 0, err
			}
			st.rbuf = b[5+n:]
			if len(st.rbuf) == 0 {
				st.rbuf = nil // the call may still hold msg
			}
			st.consumed += int64(5 + n)
			return msg, st.windowDueLocked(), nil
		}
	}
	if update = st.windowDueLocked(); update > 0 {
		return nil, update, nil
	}
	if st.clientDone {
		if len(b) == 0 {
			return nil, 0, io.EOF
		}
		// A message cut short by the end: grpc-go's RecvMsg error.
		return nil, 0, errTruncated
	}
	return nil, 0, nil
}

// windowDueLocked is the stream window to grant now: the client may have
// a window's worth of bytes beyond what the call consumed, or, while a
// message larger than the window is arriving, all of that message.
func (st *stream) windowDueLocked() uint32 {
	limit := int64(streamWindow)
	if len(st.rbuf) >= 5 {
		limit = max(limit, 5+int64(binary.BigEndian.Uint32(st.rbuf[1:5])))
	}
	due := st.consumed + limit - st.granted
	if due <= 0 || due < streamWindow/4 && limit == streamWindow {
		return 0
	}
	st.granted += due
	return uint32(due)
}

func (st *stream) compressorForRecv() (encoding.Compressor, error) {
	rc := st.recvCompress
	if rc == "" || rc == "identity" {
		return nil, nil
	}
	return encoding.GetCompressor(rc), nil
}

func (st *stream) windowUpdate(n uint32) {
	c := st.c
	c.mu.Lock()
	if !st.done && !st.reset && !c.closed {
		c.wfr.WriteWindowUpdate(st.id, n)
		c.kickLocked()
	}
	c.mu.Unlock()
}
