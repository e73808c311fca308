package serve

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/soheilhy/cmux"
)

// newHTTPHandler serves the plain-HTTP endpoints etcd serves on its client
// port: /health, /livez, /readyz, /version, /metrics and, when enabled, the
// JSON gateway under /v3/; all behind etcd's access controller with its
// default settings (see accessController).
func (s *Server) newHTTPHandler() http.Handler {
	mux := http.NewServeMux()
	if s.gw != nil {
		mux.Handle("/v3/", s.gw.handler)
	}
	mux.HandleFunc("/health", s.o.Health)
	if s.o.Probes != nil {
		for _, p := range []string{"/livez", "/livez/", "/readyz", "/readyz/"} {
			mux.Handle(p, s.o.Probes)
		}
	} else {
		mux.HandleFunc("/livez", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
		mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	}
	mux.HandleFunc("/version", s.o.Version)
	mux.Handle("/metrics", s.o.Metrics)
	if s.cfg.Server.EnablePprof {
		registerPprof(mux)
	}
	return &accessController{s: s, mux: mux}
}

// accessController is what etcd puts in front of its client-port HTTP mux,
// with etcd's defaults (--cors='*', --host-whitelist='*'): the old
// /v3beta/ gateway prefix is rewritten to /v3/, every answer allows any
// origin, a CORS preflight (OPTIONS) is answered 200 with no body, and a
// gateway request over TLS whose client certificate names a user is refused
// while client-certificate auth and auth are on: the CN would not be used
// (gateway requests authenticate by token only), so etcd says so rather
// than run the request as nobody.
type accessController struct {
	s   *Server
	mux *http.ServeMux
}

func (ac *accessController) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/v3beta/") {
		r.URL.Path = "/v3/" + r.URL.Path[len("/v3beta/"):]
	}
	if ac.s.gw != nil && ac.s.cfg.Server.TLS.ClientCertAuth && strings.HasPrefix(r.URL.Path, "/v3/") {
		if ac.s.o.AuthEnabled() && tlsCommonName(connTLS(r.Context())) != "" {
			http.Error(w, "CommonName of client sending a request against gateway will be ignored and not used as expected", http.StatusBadRequest)
			return
		}
	}
	h := w.Header()
	h.Add("Access-Control-Allow-Methods", "POST, GET, OPTIONS, PUT, DELETE")
	h.Add("Access-Control-Allow-Origin", "*")
	h.Add("Access-Control-Allow-Headers", "accept, content-type, authorization")
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusOK)
		return
	}
	ac.mux.ServeHTTP(w, r)
}

// tlsStateKey keys a connection's *tls.ConnectionState in its requests'
// contexts (see withConnTLS).
type tlsStateKey struct{}

// withConnTLS is the client-port HTTP server's ConnContext. Its
// connections reach it TLS-terminated but wrapped by cmux, so net/http
// leaves Request.TLS nil; the state is kept in the context instead. The
// handshake is complete here: cmux read the first bytes to route the
// connection.
func withConnTLS(ctx context.Context, c net.Conn) context.Context {
	if mc, ok := c.(*cmux.MuxConn); ok {
		c = mc.Conn
	}
	if tc, ok := c.(*tls.Conn); ok {
		cs := tc.ConnectionState()
		return context.WithValue(ctx, tlsStateKey{}, &cs)
	}
	return ctx
}

// connTLS returns the TLS state withConnTLS stored, or nil.
func connTLS(ctx context.Context) *tls.ConnectionState {
	cs, _ := ctx.Value(tlsStateKey{}).(*tls.ConnectionState)
	return cs
}

// tlsCommonName is the CN of the first verified client certificate chain
// that has one, as etcd looks for it; "" without TLS.
func tlsCommonName(cs *tls.ConnectionState) string {
	if cs == nil {
		return ""
	}
	for _, chain := range cs.VerifiedChains {
		if len(chain) > 0 && chain[0].Subject.CommonName != "" {
			return chain[0].Subject.CommonName
		}
	}
	return ""
}

// metricsHTTP serves a --listen-metrics-urls listener: /metrics and /health
// only, as etcd.
func (s *Server) metricsHTTP() *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", s.o.Metrics)
	mux.HandleFunc("/health", s.o.Health)
	return &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
}
