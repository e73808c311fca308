package serve

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCRLChecker: a list in DER (etcd's) or PEM refuses the certificates
// it names and no others, follows a rewrite of the file, and a file that
// is not a list is an error at start and refuses everyone later (fail
// closed, as etcd).
func TestCRLChecker(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, ca, ca, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if ca, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	crl := func(serials ...int64) []byte {
		var entries []x509.RevocationListEntry
		for _, s := range serials {
			entries = append(entries, x509.RevocationListEntry{SerialNumber: big.NewInt(s), RevocationTime: time.Now()})
		}
		b, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
			Number: big.NewInt(1), ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour), RevokedCertificateEntries: entries,
		}, ca, key)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	conn := func(serial int64) tls.ConnectionState {
		return tls.ConnectionState{PeerCertificates: []*x509.Certificate{{SerialNumber: big.NewInt(serial)}}}
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		"der": crl(7), "pem": pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl(7)}),
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := newCRLChecker(path)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := c.verify(conn(7)); err == nil || err.Error() != "transport: certificate serial 07 revoked" {
			t.Errorf("%s: revoked certificate: %v", name, err)
		}
		if err := c.verify(conn(8)); err != nil {
			t.Errorf("%s: good certificate: %v", name, err)
		}
		if err := c.verify(tls.ConnectionState{}); err != nil {
			t.Errorf("%s: no certificate: %v", name, err)
		}
		// Rewritten: 8 revoked too.
		time.Sleep(10 * time.Millisecond)
		if err := os.WriteFile(path, crl(7, 8), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := c.verify(conn(8)); err == nil {
			t.Errorf("%s: certificate revoked by the rewritten list accepted", name)
		}
		// Garbage: everyone refused.
		if err := os.WriteFile(path, []byte("not a crl at all"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := c.verify(conn(9)); err == nil || !strings.Contains(err.Error(), "cannot check the certificate revocation list") {
			t.Errorf("%s: after the list was damaged: %v", name, err)
		}
		if _, err := newCRLChecker(path); err == nil {
			t.Errorf("%s: a damaged list accepted at start", name)
		}
	}
	if _, err := newCRLChecker(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing list accepted at start")
	}
}
