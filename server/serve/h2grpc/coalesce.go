package h2grpc

// A stream's messages queued back to back share one DATA frame: a watch
// stream's responses to several watchers of one revision, or a server
// stream's burst, reach the client as one frame instead of one each. gRPC
// frames messages inside the stream's bytes, so any client reads them the
// same; grpc-go's client handles a DATA frame (flow control, its receive
// buffer, waking the stream's reader) once per frame, which is the cost
// this saves. Flow control is charged by bytes, as before.

// dataFrameHeader is an HTTP/2 frame header's size.
const dataFrameHeader = 9

// writeDataLocked queues p as DATA on stream id: appended to the DATA
// frame that ends wbuf when it is the same stream's and p fits in the
// peer's frame size, else as a new frame. c.mu is held.
func (c *conn) writeDataLocked(id uint32, p []byte) {
	if c.dataEnd > 0 && c.dataEnd == len(c.wbuf) && c.dataID == id {
		if l := frameLen(c.wbuf[c.dataHdr:]) + len(p); l <= c.peerMaxFrame {
			c.wbuf = append(c.wbuf, p...)
			h := c.wbuf[c.dataHdr:]
			h[0], h[1], h[2] = byte(l>>16), byte(l>>8), byte(l)
			c.dataEnd = len(c.wbuf)
			return
		}
	}
	c.dataHdr = len(c.wbuf)
	c.wfr.WriteData(id, false, p)
	c.dataEnd, c.dataID = len(c.wbuf), id
}

// frameLen is the payload length in a frame header.
func frameLen(h []byte) int { return int(h[0])<<16 | int(h[1])<<8 | int(h[2]) }
