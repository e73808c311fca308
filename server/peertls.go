package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/metastore-dev/metastore/server/config"
)

// peerTLS builds the peer listener's and the peer clients' TLS from etcd's
// --peer-* settings; both nil when no certificate is configured (http://
// peer URLs).
func peerTLS(c config.PeerTLS) (server, client *tls.Config, err error) {
	if c.CertFile == "" {
		return nil, nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("peer certificate: %w", err)
	}
	var pool *x509.CertPool
	if c.TrustedCAFile != "" {
		pem, err := os.ReadFile(c.TrustedCAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("peer-trusted-ca-file: %w", err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("peer-trusted-ca-file %s: no PEM certificates", c.TrustedCAFile)
		}
	}
	server = &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"h2"},
		ClientAuth:   tls.NoClientCert,
		ClientCAs:    pool,
	}
	client = &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert}, // presented for --peer-client-cert-auth
		RootCAs:      pool,
		NextProtos:   []string{"h2"},
	}
	switch {
	case c.ClientCertAuth && pool != nil:
		server.ClientAuth = tls.RequireAndVerifyClientCert
	case c.ClientCertAuth:
		// Auto TLS: every member's certificate is its own, so there is
		// no CA to verify against; a certificate is still required.
		server.ClientAuth = tls.RequireAnyClientCert
	}
	if c.AutoTLS && pool == nil {
		// etcd's --peer-auto-tls: self-signed certificates that peers
		// cannot verify; the connection is encrypted, not authenticated.
		client.InsecureSkipVerify = true
	}
	if c.AllowedCN != "" {
		cn := c.AllowedCN
		// etcd's --peer-cert-allowed-cn: the peer's verified certificate
		// must carry this common name.
		server.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
			for _, chain := range chains {
				if len(chain) > 0 && chain[0].Subject.CommonName == cn {
					return nil
				}
			}
			if len(chains) == 0 && len(raw) > 0 {
				// Not verified against a CA (auto TLS): the presented leaf.
				if c, err := x509.ParseCertificate(raw[0]); err == nil && c.Subject.CommonName == cn {
					return nil
				}
			}
			return errors.New("peer certificate: common name not allowed")
		}
	}
	return server, client, nil
}
