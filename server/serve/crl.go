package serve

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// crlChecker refuses client certificates listed in a certificate
// revocation list (etcd's --client-crl-file), at the handshake: a revoked
// client never gets a connection, as on etcd, whose listener closes it
// after the handshake. The file is re-read when its modification time or
// size changes, so a new list takes effect without a restart; one that
// cannot be read or parsed refuses every client certificate (fail closed,
// as etcd, which reads it on every connection).
type crlChecker struct {
	file string

	mu      sync.Mutex
	mtime   time.Time
	size    int64
	revoked map[string]bool // serial numbers' bytes
	err     error
}

// newCRLChecker loads file once, so that a bad file stops the start.
func newCRLChecker(file string) (*crlChecker, error) {
	c := &crlChecker{file: file}
	if _, err := c.list(); err != nil {
		return nil, fmt.Errorf("client-crl-file: %w", err)
	}
	return c, nil
}

func (c *crlChecker) list() (map[string]bool, error) {
	st, err := os.Stat(c.file)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.revoked != nil || c.err != nil {
		if st.ModTime().Equal(c.mtime) && st.Size() == c.size {
			return c.revoked, c.err
		}
	}
	c.mtime, c.size = st.ModTime(), st.Size()
	c.revoked, c.err = parseCRL(c.file)
	return c.revoked, c.err
}

func parseCRL(file string) (map[string]bool, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	if block, _ := pem.Decode(raw); block != nil {
		if block.Type != "X509 CRL" {
			return nil, fmt.Errorf("%s: PEM block %q, want X509 CRL", file, block.Type)
		}
		raw = block.Bytes
	} else if bytes.HasPrefix(bytes.TrimSpace(raw), []byte("-----")) {
		return nil, fmt.Errorf("%s: malformed PEM", file)
	}
	crl, err := x509.ParseRevocationList(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	revoked := make(map[string]bool, len(crl.RevokedCertificateEntries))
	for _, e := range crl.RevokedCertificateEntries {
		revoked[string(e.SerialNumber.Bytes())] = true
	}
	return revoked, nil
}

// verify is the tls.Config's VerifyConnection: etcd's checkCRL over every
// certificate the client presented.
func (c *crlChecker) verify(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	revoked, err := c.list()
	if err != nil {
		return errors.Join(errors.New("transport: cannot check the certificate revocation list"), err)
	}
	for _, cert := range cs.PeerCertificates {
		serial := cert.SerialNumber.Bytes()
		if revoked[string(serial)] {
			return fmt.Errorf("transport: certificate serial %x revoked", serial)
		}
	}
	return nil
}
