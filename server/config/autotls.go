package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// autoTLSValidity is how long a generated certificate lasts: etcd's
// --self-signed-cert-validity default of one year.
const autoTLSValidity = 365 * 24 * time.Hour

// autoTLS fills in CertFile and KeyFile with a self-signed certificate for
// the https:// listeners' hosts when AutoTLS is set and neither file was
// given, as etcd's --auto-tls does. The pair is made once in
// <dataDir>/fixtures/client (etcd's place) and reused afterwards, so a
// reload that re-reads the configuration gets the same files.
func (s *Server) autoTLS(dataDir string) error {
	t := &s.TLS
	if !t.AutoTLS || t.CertFile != "" || t.KeyFile != "" || dataDir == "" {
		return nil
	}
	var hosts []string
	for _, raw := range s.servedURLs() {
		u, err := url.Parse(raw)
		if err != nil || !IsTLSScheme(u.Scheme) {
			continue // plain listeners need no certificate; bad URLs are Validate's to report
		}
		hosts = append(hosts, u.Hostname())
	}
	if len(hosts) == 0 {
		return nil
	}
	dir := filepath.Join(dataDir, "fixtures", "client")
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if fileExists(certPath) && fileExists(keyPath) {
		t.CertFile, t.KeyFile = certPath, keyPath
		return nil
	}
	if err := writeSelfSigned(dir, certPath, keyPath, hosts); err != nil {
		return fmt.Errorf("server.tls.auto_tls: %w", err)
	}
	t.CertFile, t.KeyFile = certPath, keyPath
	return nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// writeSelfSigned writes a P-256 key and a certificate signed by it for
// hosts (IP addresses and DNS names) into certPath and keyPath.
func writeSelfSigned(dir, certPath, keyPath string, hosts []string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"metastore"}},
		NotBefore:             now.Add(-time.Hour), // tolerate a little clock skew
		NotAfter:              now.Add(autoTLSValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	seen := map[string]bool{}
	for _, h := range hosts {
		if seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(strings.Trim(h, "[]")); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	// The key is written first and the certificate last: a crash between
	// them leaves no certificate, so the next start makes a new pair.
	if err := writePEM(keyPath, "EC PRIVATE KEY", keyDER, 0o600); err != nil {
		return err
	}
	return writePEM(certPath, "CERTIFICATE", der, 0o644)
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	data := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return errors.Join(err, os.Remove(tmp))
	}
	return nil
}
