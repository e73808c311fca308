package cluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue makes a certificate for 127.0.0.1 with common name cn, usable to
// serve and to call (a peer is both), and returns its PEM cert and key.
func (ca *testCA) issue(t *testing.T, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// peerHandshake connects to a member's peer port over TLS with the given
// client certificate (none if cert is nil) and reports the error the
// server's verdict on it gives: TLS 1.3 settles the client certificate
// after the client's side of the handshake, so a refusal arrives as an
// alert on the first read; an accepted client reads nothing until the
// deadline.
func peerHandshake(addr string, roots *x509.CertPool, cert *tls.Certificate) error {
	cfg := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", NextProtos: []string{"h2", "http/1.1"}}
	if cert != nil {
		// Sent even if the server names other CAs as acceptable.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	_, err = conn.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	return err
}

// TestPeerTLS runs a cluster whose peers talk over TLS with client
// certificates required and a common name enforced (etcd's
// --peer-cert-file, --peer-key-file, --peer-trusted-ca-file,
// --peer-client-cert-auth, --peer-cert-allowed-cn): the cluster forms and
// replicates, and the peer port refuses callers without a certificate, with
// one from another CA, or with another common name.
func TestPeerTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "cluster-ca")
	certPEM, keyPEM := ca.issue(t, "peer")
	tlsCfg := &PeerTLS{
		CertFile: writeFile(t, dir, "peer.crt", certPEM), KeyFile: writeFile(t, dir, "peer.key", keyPEM),
		TrustedCAFile: writeFile(t, dir, "ca.crt", ca.pem), ClientCertAuth: true, AllowedCN: "peer",
	}
	good, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	otherCN, err := tls.X509KeyPair(ca.issue(t, "intruder"))
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := tls.X509KeyPair(newTestCA(t, "other-ca").issue(t, "peer"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	for _, kind := range Kinds() {
		t.Run(kind, func(t *testing.T) {
			c := Start(t, Config{Kind: kind, PeerTLS: tlsCfg})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if _, err := c.Client(t).Put(ctx, "tls", "replicated"); err != nil {
				t.Fatal(err)
			}
			if _, err := c.WaitConverged(30 * time.Second); err != nil {
				t.Fatal(err)
			}
			for _, m := range c.Members {
				r, err := m.Client().Get(ctx, "tls", clientv3.WithSerializable())
				if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "replicated" {
					t.Fatalf("%s: %v %v", m, r, err)
				}
			}
			addr := c.Members[0].PeerAddr()
			if err := peerHandshake(addr, roots, &good); err != nil {
				t.Fatalf("peer port with the members' certificate: %v", err)
			}
			for _, bad := range []struct {
				name string
				cert *tls.Certificate
			}{{"no certificate", nil}, {"another CA's certificate", &otherCA}, {"common name intruder", &otherCN}} {
				err := peerHandshake(addr, roots, bad.cert)
				if err == nil {
					t.Errorf("peer port accepted a caller with %s", bad.name)
				} else {
					t.Logf("%s: caller with %s refused: %v", kind, bad.name, err)
				}
			}
			// A plain-text caller gets nothing it can use either.
			resp, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", addr)
			if err == nil {
				_, _ = resp.Write([]byte("GET /version HTTP/1.1\r\nHost: x\r\n\r\n"))
				_ = resp.SetReadDeadline(time.Now().Add(2 * time.Second))
				buf := make([]byte, 64)
				n, _ := resp.Read(buf)
				resp.Close()
				if strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
					t.Errorf("peer port answered plain HTTP: %q", buf[:n])
				}
			}
			c.CheckRaces(t)
		})
	}
}
