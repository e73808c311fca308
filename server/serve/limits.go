package serve

import (
	"net"
	"sync"
	"sync/atomic"
)

// connLimitListener caps the open connections of one listener. A connection
// beyond the cap is accepted and closed at once, so the client gets a prompt
// failure (and retries with backoff) instead of hanging in the backlog.
type connLimitListener struct {
	net.Listener
	max     *atomic.Int64 // 0: no limit; a reload changes it for new connections
	open    atomic.Int64
	refused func() // called per refused connection
}

func newConnLimitListener(ln net.Listener, max *atomic.Int64, refused func()) net.Listener {
	return &connLimitListener{Listener: ln, max: max, refused: refused}
}

func (l *connLimitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if max := l.max.Load(); l.open.Add(1) > max && max > 0 {
			l.open.Add(-1)
			c.Close()
			if l.refused != nil {
				l.refused()
			}
			continue
		}
		return &limitedConn{Conn: c, l: l}, nil
	}
}

// limitedConn gives its slot back on the first Close.
type limitedConn struct {
	net.Conn
	l    *connLimitListener
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.open.Add(-1) })
	return err
}
