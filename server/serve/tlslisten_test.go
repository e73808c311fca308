package serve

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuf is a log sink read while the listener writes to it.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestHandshakeListener: a client refused by the handshake (no client
// certificate where one is required) is logged in etcd's words and never
// accepted; a good client is accepted as a *tls.Conn with the handshake
// done; Close ends Accept.
func TestHandshakeListener(t *testing.T) {
	cert := testCert(t)
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAnyClientCert, MinVersion: tls.VersionTLS12}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuf
	lg := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ln := newHandshakeListener(inner, cfg, logRejected(lg, "client"))

	accepted := make(chan net.Conn, 2)
	acceptErr := make(chan error, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				acceptErr <- err
				return
			}
			accepted <- c
		}
	}()

	// No client certificate: refused and logged.
	bad, err := tls.Dial("tcp", inner.Addr().String(), &tls.Config{InsecureSkipVerify: true, ServerName: "srv.example"})
	if err == nil {
		// TLS 1.3: the client learns of the refusal on its first read.
		_, err = bad.Read(make([]byte, 1))
		bad.Close()
	}
	if err == nil {
		t.Fatal("a client without a certificate was served")
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "rejected connection on client endpoint") {
		if time.Now().After(deadline) {
			t.Fatalf("no rejection logged: %q", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	var entry struct {
		Level, Msg string
		RemoteAddr string `json:"remote-addr"`
		ServerName string `json:"server-name"`
		Error      string `json:"error"`
	}
	if err := json.Unmarshal([]byte(strings.SplitN(logs.String(), "\n", 2)[0]), &entry); err != nil {
		t.Fatal(err)
	}
	if entry.Level != "WARN" || entry.RemoteAddr == "" || entry.ServerName != "srv.example" || !strings.Contains(entry.Error, "certificate") {
		t.Errorf("rejection line: %+v", entry)
	}

	// A client with a certificate: accepted, handshake complete.
	good, err := tls.Dial("tcp", inner.Addr().String(), &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	select {
	case c := <-accepted:
		tc, ok := c.(*tls.Conn)
		if !ok || !tc.ConnectionState().HandshakeComplete || len(tc.ConnectionState().PeerCertificates) != 1 {
			t.Fatalf("accepted %T without a completed handshake", c)
		}
		c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("the good client was not accepted")
	}
	select {
	case c := <-accepted:
		t.Fatalf("a second connection %v was accepted: the refused one?", c.RemoteAddr())
	default:
	}

	// A client that connects and hangs up: a debug line, not a warning.
	raw, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	raw.Close()
	for !strings.Contains(logs.String(), `"level":"DEBUG","msg":"rejected connection on client endpoint"`) {
		if time.Now().After(deadline) {
			t.Fatalf("hang-up not logged at debug: %q", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}

	ln.Close()
	select {
	case err := <-acceptErr:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept did not end on Close")
	}
}

func testCert(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "srv"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
