package server

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/metastore-dev/metastore/server/config"
)

// selfSigned writes a certificate with common name cn and its key.
func selfSigned(t *testing.T, dir, cn string) (certFile, keyFile string, der []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn + ".example"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, cn+".crt"), filepath.Join(dir, cn+".key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile, der
}

// TestPeerTLSAllowedCN: --peer-cert-allowed-cn admits only a peer whose
// certificate has that common name; --peer-client-cert-auth requires one.
func TestPeerTLSAllowedCN(t *testing.T) {
	dir := t.TempDir()
	cert, key, _ := selfSigned(t, dir, "member")
	_, _, good := selfSigned(t, dir, "peer-ok")
	_, _, bad := selfSigned(t, dir, "intruder")
	srv, cli, err := peerTLS(config.PeerTLS{CertFile: cert, KeyFile: key, ClientCertAuth: true, AutoTLS: true, AllowedCN: "peer-ok"})
	if err != nil {
		t.Fatal(err)
	}
	if srv.ClientAuth != tls.RequireAnyClientCert || !cli.InsecureSkipVerify || len(cli.Certificates) != 1 {
		t.Fatalf("auto TLS with client cert auth: server %v, client skip-verify %v", srv.ClientAuth, cli.InsecureSkipVerify)
	}
	if err := srv.VerifyPeerCertificate([][]byte{good}, nil); err != nil {
		t.Fatalf("allowed CN refused: %v", err)
	}
	if err := srv.VerifyPeerCertificate([][]byte{bad}, nil); err == nil {
		t.Fatal("a peer with another CN was accepted")
	}
	if s, c, err := peerTLS(config.PeerTLS{}); s != nil || c != nil || err != nil {
		t.Fatal("no certificate: want plaintext peers")
	}
}

// TestPeerTLSAllowedHostname: --peer-cert-allowed-hostname admits a peer
// whose certificate is valid for one of the listed hosts; lists work for
// both flags, and the two are exclusive, with etcd's error.
func TestPeerTLSAllowedHostname(t *testing.T) {
	dir := t.TempDir()
	cert, key, _ := selfSigned(t, dir, "member")
	_, _, good := selfSigned(t, dir, "peer-ok")
	_, _, bad := selfSigned(t, dir, "intruder")
	base := config.PeerTLS{CertFile: cert, KeyFile: key, ClientCertAuth: true, AutoTLS: true}
	hosts := base
	hosts.AllowedHostname = "other.example, peer-ok.example"
	srv, _, err := peerTLS(hosts)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.VerifyPeerCertificate([][]byte{good}, nil); err != nil {
		t.Fatalf("allowed host refused: %v", err)
	}
	if err := srv.VerifyPeerCertificate([][]byte{bad}, nil); err == nil {
		t.Fatal("a peer valid for another host was accepted")
	}
	cns := base
	cns.AllowedCN = "x,intruder"
	srv, _, err = peerTLS(cns)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.VerifyPeerCertificate([][]byte{bad}, nil); err != nil {
		t.Fatalf("second CN of the list refused: %v", err)
	}
	both := hosts
	both.AllowedCN = "peer-ok"
	if _, _, err := peerTLS(both); err == nil || !strings.Contains(err.Error(), "AllowedCNs and AllowedHostnames are mutually exclusive") {
		t.Fatalf("both allowed CNs and hostnames: %v", err)
	}
}

// TestPeerTLSClientCert: --peer-client-cert-file and --peer-client-key-file
// replace the certificate presented when dialing peers, not the served one.
func TestPeerTLSClientCert(t *testing.T) {
	dir := t.TempDir()
	cert, key, served := selfSigned(t, dir, "member")
	ccert, ckey, presented := selfSigned(t, dir, "member-client")
	srv, cli, err := peerTLS(config.PeerTLS{CertFile: cert, KeyFile: key, ClientCertFile: ccert, ClientKeyFile: ckey})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(srv.Certificates[0].Certificate[0], served) || !bytes.Equal(cli.Certificates[0].Certificate[0], presented) {
		t.Fatal("served or presented certificate is not the configured one")
	}
	if _, _, err := peerTLS(config.PeerTLS{CertFile: cert, KeyFile: key, ClientCertFile: ccert}); err == nil || !strings.Contains(err.Error(), "peer client certificate") {
		t.Fatalf("client cert without its key: %v", err)
	}
}

// TestPeerTLSTrustedCARequiresClientCert: as etcd's TLSInfo, a trusted CA
// alone makes the peer listener require a certificate signed by it; a
// refused handshake is logged in etcd's words by the peer credentials.
func TestPeerTLSTrustedCARequiresClientCert(t *testing.T) {
	dir := t.TempDir()
	cert, key, _ := selfSigned(t, dir, "member")
	srv, cli, err := peerTLS(config.PeerTLS{CertFile: cert, KeyFile: key, TrustedCAFile: cert})
	if err != nil {
		t.Fatal(err)
	}
	if srv.ClientAuth != tls.RequireAndVerifyClientCert || len(cli.Certificates) != 1 {
		t.Fatalf("trusted CA alone: server %v, client certificates %d", srv.ClientAuth, len(cli.Certificates))
	}

	var logs bytes.Buffer
	creds := rejectLoggingCreds{credentials.NewTLS(srv), slog.New(slog.NewTextHandler(&logs, nil))}
	sc, cc := net.Pipe()
	done := make(chan error, 1)
	go func() {
		c := tls.Client(cc, &tls.Config{InsecureSkipVerify: true}) // no certificate
		err := c.Handshake()
		if err == nil {
			_, err = c.Read(make([]byte, 1))
		}
		cc.Close()
		done <- err
	}()
	if _, _, err := creds.ServerHandshake(sc); err == nil {
		t.Fatal("a peer without a certificate passed the handshake")
	}
	sc.Close()
	<-done
	if got := logs.String(); !strings.Contains(got, `level=WARN msg="rejected connection on peer endpoint"`) || !strings.Contains(got, "certificate") {
		t.Fatalf("rejection log: %q", got)
	}
}
