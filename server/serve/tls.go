package serve

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/soheilhy/cmux"
	"google.golang.org/grpc/credentials"

	"github.com/metastore-dev/metastore/server/config"
)

// newServerTLS builds the TLS configuration of https:// client listeners as
// etcd's: TLS 1.2 or newer; a client certificate signed by the trusted CA is
// required once a CA is configured or client-cert-auth is on. The server
// certificate is re-read when its files change, so it can be rotated without
// a restart.
func newServerTLS(c config.TLS) (*tls.Config, error) {
	kp := &keyPairLoader{certFile: c.CertFile, keyFile: c.KeyFile}
	if _, err := kp.get(); err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return kp.get()
		},
		// h2 carries gRPC, http/1.1 the JSON gateway and /health, /metrics.
		NextProtos: []string{"h2", "http/1.1"},
		ClientAuth: tls.NoClientCert,
	}
	if c.TrustedCAFile != "" || c.ClientCertAuth {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	if c.TrustedCAFile != "" {
		pem, err := os.ReadFile(c.TrustedCAFile)
		if err != nil {
			return nil, fmt.Errorf("trusted-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("trusted-ca-file %s: no PEM certificates", c.TrustedCAFile)
		}
		cfg.ClientCAs = pool
	}
	if c.CRLFile != "" {
		crl, err := newCRLChecker(c.CRLFile)
		if err != nil {
			return nil, err
		}
		cfg.VerifyConnection = crl.verify
	}
	return cfg, nil
}

// keyPairLoader caches a certificate and reloads it when either file's
// modification time changes.
type keyPairLoader struct {
	certFile, keyFile string

	mu       sync.Mutex
	cert     *tls.Certificate
	certTime time.Time
	keyTime  time.Time
}

func (k *keyPairLoader) get() (*tls.Certificate, error) {
	ci, err := os.Stat(k.certFile)
	if err != nil {
		return nil, fmt.Errorf("cert-file: %w", err)
	}
	ki, err := os.Stat(k.keyFile)
	if err != nil {
		return nil, fmt.Errorf("key-file: %w", err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cert != nil && ci.ModTime().Equal(k.certTime) && ki.ModTime().Equal(k.keyTime) {
		return k.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(k.certFile, k.keyFile)
	if err != nil {
		if k.cert != nil {
			// Half-written during rotation: keep serving the old one.
			return k.cert, nil
		}
		return nil, fmt.Errorf("load server certificate: %w", err)
	}
	k.cert, k.certTime, k.keyTime = &cert, ci.ModTime(), ki.ModTime()
	return k.cert, nil
}

// tlsAfterMux are gRPC transport credentials for connections that were
// already TLS-terminated by a tls.Listener in front of cmux (so gRPC and
// HTTP/1 share the port, as on etcd). The handshake completes here and the
// state is reported as a standard credentials.TLSInfo, so peer.FromContext
// sees the verified client certificate.
type tlsAfterMux struct{}

var _ credentials.TransportCredentials = tlsAfterMux{}

var errClientSide = errors.New("tlsAfterMux: server-side only")

func (tlsAfterMux) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errClientSide
}

func (tlsAfterMux) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	inner := c
	if mc, ok := inner.(*cmux.MuxConn); ok {
		inner = mc.Conn
	}
	tc, ok := inner.(*tls.Conn)
	if !ok {
		return nil, nil, fmt.Errorf("tlsAfterMux: %T is not a TLS connection", inner)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, nil, err
	}
	return c, credentials.TLSInfo{
		State:          tc.ConnectionState(),
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
	}, nil
}

func (tlsAfterMux) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls", SecurityVersion: "1.2"}
}

func (tlsAfterMux) Clone() credentials.TransportCredentials { return tlsAfterMux{} }

func (tlsAfterMux) OverrideServerName(string) error { return nil }
