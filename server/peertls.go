package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

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
	clientCert := cert // presented for --peer-client-cert-auth
	if c.ClientCertFile != "" || c.ClientKeyFile != "" {
		if clientCert, err = tls.LoadX509KeyPair(c.ClientCertFile, c.ClientKeyFile); err != nil {
			return nil, nil, fmt.Errorf("peer client certificate: %w", err)
		}
	}
	client = &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{clientCert},
		RootCAs:      pool,
		NextProtos:   []string{"h2"},
	}
	switch {
	case pool != nil:
		// As etcd's TLSInfo: a trusted CA alone already makes the
		// listener require a client certificate signed by it.
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
	cns, hosts := splitList(c.AllowedCN), splitList(c.AllowedHostname)
	if len(cns) > 0 && len(hosts) > 0 {
		return nil, nil, fmt.Errorf("AllowedCNs and AllowedHostnames are mutually exclusive (cns=%q, hostnames=%q)", cns, hosts)
	}
	// etcd's --peer-cert-allowed-cn and --peer-cert-allowed-hostname: the
	// peer's verified certificate must carry one of these common names,
	// or be valid for one of these hosts.
	var allowed func(*x509.Certificate) bool
	if len(cns) > 0 {
		allowed = func(cert *x509.Certificate) bool { return slices.Contains(cns, cert.Subject.CommonName) }
	}
	if len(hosts) > 0 {
		allowed = func(cert *x509.Certificate) bool {
			return slices.ContainsFunc(hosts, func(h string) bool { return cert.VerifyHostname(h) == nil })
		}
	}
	if allowed != nil {
		server.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
			for _, chain := range chains {
				if len(chain) > 0 && allowed(chain[0]) {
					return nil
				}
			}
			if len(chains) == 0 && len(raw) > 0 {
				// Not verified against a CA (auto TLS): the presented leaf.
				if c, err := x509.ParseCertificate(raw[0]); err == nil && allowed(c) {
					return nil
				}
			}
			return errors.New("client certificate authentication failed") // etcd's words
		}
	}
	return server, client, nil
}

// splitList reads etcd's comma-separated flag values, skipping blanks.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
