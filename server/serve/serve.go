package serve

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	gwruntime "github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/soheilhy/cmux"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"

	"github.com/metastore-dev/metastore/server/config"
)

// Options are what the transport serves.
type Options struct {
	Config *config.Config
	Logger *slog.Logger
	// NewGRPC returns a gRPC server with every service registered; creds
	// is nil for plaintext listeners.
	NewGRPC func(creds credentials.TransportCredentials) GRPCServer
	// Codec is the codec of the JSON gateway's client (the server's own).
	Codec encoding.CodecV2
	// GatewayRoutes add routes to the JSON gateway beyond etcd's six
	// services (Lock and Election).
	GatewayRoutes []func(*gwruntime.ServeMux, *grpc.ClientConn) error
	// Health, Version and Metrics answer /health, /version and /metrics.
	Health, Version http.HandlerFunc
	// Probes, if set, answers /livez and /readyz and their sub-paths
	// (etcd's per-check paths); nil: a plain "ok".
	Probes  http.Handler
	Metrics http.Handler
	// AuthEnabled reports whether auth is on (the gateway's CN check).
	AuthEnabled func() bool
	// ConnRefused counts a connection refused by --max-connections.
	ConnRefused func()
	// Revision is logged when a listener is ready.
	Revision func() int64
}

// GRPCServer is a gRPC transport with every service registered: grpc-go's
// *grpc.Server or the lean *h2grpc.Server (grpc.transport).
type GRPCServer interface {
	Serve(net.Listener) error
	GracefulStop()
	Stop()
}

// Server is the member's client transport: its listeners, and on each
// client port gRPC and HTTP split by cmux (TLS, h2 by content type).
type Server struct {
	o       Options
	cfg     *config.Config
	lg      *slog.Logger
	grpc    GRPCServer // plaintext listeners
	grpcTLS GRPCServer // https listeners; nil without any
	http    *http.Server
	gw      *gateway // the JSON gateway; nil when disabled
	// h2 serves HTTP/2 requests that are not gRPC on https listeners;
	// nil without any.
	h2 *h2Server
	// metricsHTTPs serve --listen-metrics-urls; set by Serve.
	metricsHTTPs []*http.Server
	tlsCfg       *tls.Config // nil without https listeners
	lns          []clientListener
	addrs        []string
	// maxConns is limits.max_connections, read by every listener at each
	// accept (0: no limit); a reload changes it (SetMaxConnections).
	maxConns atomic.Int64
}

// New builds the gRPC and HTTP servers and binds every listener, so that
// Addrs is valid as soon as it returns. On an error nothing stays bound.
func New(o Options) (_ *Server, err error) {
	cfg := o.Config
	s := &Server{o: o, cfg: cfg, lg: o.Logger}
	s.maxConns.Store(int64(cfg.Limits.MaxConnections))
	defer func() {
		if err != nil {
			if s.gw != nil {
				s.gw.close()
			}
			s.Close()
		}
	}()
	if cfg.Server.HasTLS() {
		if s.tlsCfg, err = newServerTLS(cfg.Server.TLS); err != nil {
			return nil, err
		}
	}
	s.grpc = o.NewGRPC(nil)
	if s.tlsCfg != nil {
		s.grpcTLS = o.NewGRPC(tlsAfterMux{})
	}
	if cfg.Server.EnableGRPCGateway {
		if s.gw, err = newGateway(s.lg, o.Codec, o.GatewayRoutes); err != nil {
			return nil, err
		}
	}
	s.http = &http.Server{Handler: s.newHTTPHandler(), ReadHeaderTimeout: 10 * time.Second, ConnContext: withConnTLS}
	if s.tlsCfg != nil {
		if s.h2, err = newH2Server(s.http, cfg.GRPC.MaxConcurrentStreams); err != nil {
			return nil, err
		}
	}
	for _, u := range cfg.Server.ListenClientURLs {
		cl, err := s.listen(u, false)
		if err != nil {
			return nil, err
		}
		s.lns = append(s.lns, cl)
		s.addrs = append(s.addrs, cl.addr)
	}
	for _, u := range cfg.Server.ListenMetricsURLs {
		cl, err := s.listen(u, true)
		if err != nil {
			return nil, err
		}
		s.lns = append(s.lns, cl)
	}
	for _, u := range cfg.Server.ListenClientHTTPURLs {
		cl, err := s.listen(u, false)
		if err != nil {
			return nil, err
		}
		cl.httpOnly = true
		s.lns = append(s.lns, cl)
	}
	return s, nil
}

// clientListener is one bound listener: TLS-terminated for https:// URLs,
// connection-limited, and either a client port (gRPC and HTTP) or a metrics
// port (HTTP only).
type clientListener struct {
	ln      net.Listener
	addr    string
	secure  bool
	metrics bool
	// httpOnly: a --listen-client-http-urls listener (the client port's
	// HTTP endpoints without gRPC).
	httpOnly bool
}

func (s *Server) listen(rawURL string, metricsOnly bool) (clientListener, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return clientListener{}, fmt.Errorf("listen URL: %w", err)
	}
	ln, err := ListenURL(u)
	if err != nil {
		return clientListener{}, fmt.Errorf("listen on %s: %w", rawURL, err)
	}
	cl := clientListener{addr: ln.Addr().String(), metrics: metricsOnly, secure: config.IsTLSScheme(u.Scheme)}
	ln = newConnLimitListener(ln, &s.maxConns, s.o.ConnRefused)
	if cl.secure {
		// Validate guarantees the certificates for every https:// URL.
		ln = newHandshakeListener(ln, s.tlsCfg, logRejected(s.lg, "client"))
	}
	cl.ln = ln
	return cl, nil
}

// Addrs returns the bound client listener addresses (host:port).
func (s *Server) Addrs() []string { return s.addrs }

// SetMaxConnections changes limits.max_connections (0: no limit) for the
// connections accepted from now on; open ones keep their slots.
func (s *Server) SetMaxConnections(n int) { s.maxConns.Store(int64(n)) }

// Serve serves every listener until ctx ends or one fails; it returns that
// failure (nil for a normal end). Stop then shuts the transport down.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 4*len(s.lns)+1)
	if s.gw != nil {
		go func() { errc <- s.gw.serve(s.grpc) }()
	}
	for _, cl := range s.lns {
		if cl.metrics {
			hs := s.metricsHTTP()
			s.metricsHTTPs = append(s.metricsHTTPs, hs)
			go func() { errc <- hs.Serve(cl.ln) }()
			s.lg.Info("serving metrics and health", "address", cl.addr, "tls", cl.secure)
			continue
		}
		if cl.httpOnly || len(s.cfg.Server.ListenClientHTTPURLs) > 0 {
			s.serveSplit(cl, errc)
			continue
		}
		// gRPC and etcd's plain-HTTP endpoints share the client port, as on
		// etcd: HTTP/2 goes to gRPC, HTTP/1 to the HTTP handler.
		m := cmux.New(cl.ln)
		g, grpcL := s.grpc, net.Listener(nil)
		if cl.secure {
			// Every TLS client speaks h2: split by content-type (see h2.go).
			g = s.grpcTLS
			grpcL = m.MatchWithWriters(matchGRPC)
			h2L := m.Match(cmux.HTTP2())
			go func() { errc <- s.h2.serve(h2L) }()
		} else {
			grpcL = m.Match(cmux.HTTP2())
		}
		httpL := m.Match(cmux.HTTP1())
		go func() { errc <- g.Serve(grpcL) }()
		go func() { errc <- s.http.Serve(httpL) }()
		go func() { errc <- m.Serve() }()
		s.lg.Info("ready to serve client requests", "address", cl.addr, "tls", cl.secure,
			"client-cert-auth", cl.secure && s.cfg.Server.TLS.ClientCertAuth, "name", s.cfg.Name,
			"data-dir", s.cfg.DataDir, "revision", s.o.Revision())
		s.logServing(cl, "grpc+http")
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		if errors.Is(err, grpc.ErrServerStopped) || errors.Is(err, http.ErrServerClosed) || errors.Is(err, cmux.ErrListenerClosed) {
			err = nil
		}
	}
	return err
}

// serveSplit serves a listener of a member with --listen-client-http-urls,
// as etcd then does: a client URL serves gRPC alone, an HTTP URL the HTTP
// endpoints alone (over TLS, h2 as well as HTTP/1).
func (s *Server) serveSplit(cl clientListener, errc chan<- error) {
	switch {
	case !cl.httpOnly:
		g := s.grpc
		if cl.secure {
			g = s.grpcTLS
		}
		go func() { errc <- g.Serve(cl.ln) }()
		s.lg.Info("ready to serve client requests (gRPC only)", "address", cl.addr, "tls", cl.secure,
			"client-cert-auth", cl.secure && s.cfg.Server.TLS.ClientCertAuth, "name", s.cfg.Name,
			"data-dir", s.cfg.DataDir, "revision", s.o.Revision())
		s.logServing(cl, "grpc")
	case cl.secure:
		m := cmux.New(cl.ln)
		h2L := m.Match(cmux.HTTP2())
		httpL := m.Match(cmux.Any())
		go func() { errc <- s.h2.serve(h2L) }()
		go func() { errc <- s.http.Serve(httpL) }()
		go func() { errc <- m.Serve() }()
		s.lg.Info("serving client HTTP", "address", cl.addr, "tls", true)
		s.logServing(cl, "http")
	default:
		go func() { errc <- s.http.Serve(cl.ln) }()
		s.lg.Info("serving client HTTP", "address", cl.addr, "tls", false)
		s.logServing(cl, "http")
	}
}

// logServing logs etcd's line for a client listener that serves, in
// etcd's words: tools and etcd's e2e tests wait for "serving client
// traffic".
func (s *Server) logServing(cl clientListener, traffic string) {
	if cl.secure {
		s.lg.Info("serving client traffic securely", "traffic", traffic, "address", cl.addr)
		return
	}
	s.lg.Info("serving client traffic insecurely; this is strongly discouraged!", "traffic", traffic, "address", cl.addr)
}

// Stop stops accepting, lets in-flight requests finish (long-lived streams
// are cut after 10s) and shuts the HTTP servers down.
func (s *Server) Stop() {
	done := make(chan struct{})
	go func() {
		var wg sync.WaitGroup
		for _, g := range []GRPCServer{s.grpc, s.grpcTLS} {
			if g != nil {
				wg.Go(g.GracefulStop)
			}
		}
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		// Long-lived streams (watches) never finish on their own.
		s.grpc.Stop()
		if s.grpcTLS != nil {
			s.grpcTLS.Stop()
		}
		<-done
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.http.Shutdown(ctx)
	if s.h2 != nil {
		s.h2.close()
	}
	if s.gw != nil {
		s.gw.close()
	}
	for _, hs := range s.metricsHTTPs {
		hs.Shutdown(ctx)
	}
}

// Close closes every listener (after Stop, or when the member fails to
// start after New).
func (s *Server) Close() {
	for _, cl := range s.lns {
		cl.ln.Close()
	}
}
