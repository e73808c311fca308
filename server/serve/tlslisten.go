package serve

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// handshakeTimeout bounds a client's TLS handshake, so a connection that
// never speaks does not hold a goroutine.
const handshakeTimeout = 10 * time.Second

// handshakeListener is a TLS listener that completes each connection's
// handshake before handing it out, each on its own goroutine so a slow
// client does not hold up the others, as etcd's TLS listener does. A
// failed handshake is reported to fail (etcd logs it) and the connection
// closed: it never reaches cmux, gRPC or the HTTP server, which would drop
// it without a word. Accepted connections are *tls.Conn, as
// tls.NewListener's.
type handshakeListener struct {
	inner net.Listener
	cfg   *tls.Config
	fail  func(*tls.Conn, error)

	connc chan net.Conn
	errc  chan error
	donec chan struct{}
	once  sync.Once
}

func newHandshakeListener(inner net.Listener, cfg *tls.Config, fail func(*tls.Conn, error)) *handshakeListener {
	l := &handshakeListener{
		inner: inner, cfg: cfg, fail: fail,
		connc: make(chan net.Conn), errc: make(chan error), donec: make(chan struct{}),
	}
	go l.acceptLoop()
	return l
}

// acceptLoop owns the inner listener's Accept; it ends when the listener
// is closed.
func (l *handshakeListener) acceptLoop() {
	for {
		c, err := l.inner.Accept()
		if err != nil {
			select {
			case l.errc <- err:
			case <-l.donec:
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		go l.handshake(tls.Server(c, l.cfg))
	}
}

func (l *handshakeListener) handshake(tc *tls.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		l.fail(tc, err)
		tc.Close()
		return
	}
	select {
	case l.connc <- tc:
	case <-l.donec:
		tc.Close()
	}
}

// Accept returns the next connection whose handshake succeeded.
func (l *handshakeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.connc:
		return c, nil
	case err := <-l.errc:
		return nil, err
	case <-l.donec:
		return nil, net.ErrClosed
	}
}

// Close stops accepting; handshakes under way finish and are closed.
func (l *handshakeListener) Close() error {
	l.once.Do(func() { close(l.donec) })
	return l.inner.Close()
}

// Addr is the inner listener's address.
func (l *handshakeListener) Addr() net.Addr { return l.inner.Addr() }

var _ net.Listener = (*handshakeListener)(nil)

// logRejected logs a failed TLS handshake on a client listener in etcd's
// words and fields (embed's logTLSHandshakeFailure): a warning, or a debug
// line for a client that hung up (EOF), which is common and harmless.
func logRejected(lg *slog.Logger, endpoint string) func(*tls.Conn, error) {
	msg := "rejected connection on " + endpoint + " endpoint"
	return func(tc *tls.Conn, err error) {
		level := slog.LevelWarn
		if errors.Is(err, io.EOF) {
			level = slog.LevelDebug
		}
		state := tc.ConnectionState()
		attrs := []any{"remote-addr", tc.RemoteAddr().String(), "server-name", state.ServerName}
		if len(state.PeerCertificates) > 0 {
			cert := state.PeerCertificates[0]
			ips := make([]string, len(cert.IPAddresses))
			for i, ip := range cert.IPAddresses {
				ips[i] = ip.String()
			}
			attrs = append(attrs, "ip-addresses", ips, "dns-names", cert.DNSNames)
		}
		lg.Log(context.Background(), level, msg, append(attrs, "error", err.Error())...)
	}
}
