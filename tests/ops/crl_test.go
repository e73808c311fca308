package ops

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/metastore-dev/metastore/server/config"
	"github.com/metastore-dev/metastore/tests/framework"
)

// writeCRL writes ca's revocation list of the certificates in files to
// path, DER-encoded: etcd reads nothing else (metastore also takes PEM).
func (ca *testCA) writeCRL(t *testing.T, path string, files ...string) {
	t.Helper()
	var revoked []x509.RevocationListEntry
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(raw)
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		revoked = append(revoked, x509.RevocationListEntry{SerialNumber: cert.SerialNumber, RevocationTime: time.Now()})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(time.Now().UnixNano()), ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour),
		RevokedCertificateEntries: revoked,
	}, ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, der, 0o600); err != nil {
		t.Fatal(err)
	}
}

// tlsMember is a server with mutual TLS and a CRL: its gRPC endpoint and
// the endpoint of its HTTP handlers (the same without split).
type tlsMember struct{ grpcURL, httpURL string }

// startCRLServer starts kind with etcd's --client-crl-file and
// --client-cert-auth on an https client URL and, with split,
// --listen-client-http-urls.
func startCRLServer(t *testing.T, kind string, certFile, keyFile, caFile, crlFile string, split bool) tlsMember {
	t.Helper()
	grpcURL := "https://127.0.0.1:" + strconv.Itoa(framework.FreePort(t))
	m := tlsMember{grpcURL: grpcURL, httpURL: grpcURL}
	if split {
		m.httpURL = "https://127.0.0.1:" + strconv.Itoa(framework.FreePort(t))
	}
	switch kind {
	case "etcd":
		cfg := embed.NewConfig()
		cfg.Dir = t.TempDir()
		cu, _ := url.Parse(grpcURL)
		pu, _ := url.Parse("http://127.0.0.1:" + strconv.Itoa(framework.FreePort(t)))
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
		if split {
			hu, _ := url.Parse(m.httpURL)
			cfg.ListenClientHttpUrls = []url.URL{*hu}
		}
		cfg.ClientTLSInfo.CertFile, cfg.ClientTLSInfo.KeyFile = certFile, keyFile
		cfg.ClientTLSInfo.TrustedCAFile, cfg.ClientTLSInfo.ClientCertAuth = caFile, true
		cfg.ClientTLSInfo.CRLFile = crlFile
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.Close)
		select {
		case <-e.Server.ReadyNotify():
		case <-time.After(30 * time.Second):
			t.Fatal("etcd not ready")
		}
	default:
		framework.StartMetastoreConfig(t, func(c *config.Config) {
			c.Server.ListenClientURLs = []string{grpcURL}
			if split {
				c.Server.ListenClientHTTPURLs = []string{m.httpURL}
			}
			c.Server.TLS = config.TLS{CertFile: certFile, KeyFile: keyFile, TrustedCAFile: caFile, ClientCertAuth: true, CRLFile: crlFile}
		})
	}
	return m
}

// TestClientCRL is etcd's TestCtlV3GetRevokedCRL and its GRPCOnly form
// (--listen-client-http-urls), against etcd then metastore: a client
// certificate listed in --client-crl-file is refused, a good one works, a
// rewritten list applies to new connections; with the HTTP listener split
// off, gRPC is served only on the client URL and the HTTP endpoints only
// on the HTTP URL, the CRL applying to both.
func TestClientCRL(t *testing.T) {
	for _, kind := range []string{"etcd", "metastore"} {
		if kind == "metastore" && framework.OnlyEtcd() {
			continue
		}
		for _, split := range []bool{false, true} {
			name := kind
			if split {
				name += "/split-http"
			}
			t.Run(name, func(t *testing.T) { clientCRL(t, kind, split) })
		}
	}
}

func clientCRL(t *testing.T, kind string, split bool) {
	ca := newCA(t, "test-ca")
	srvCert, srvKey := ca.issue(t, "server", "server", true)
	goodCert, goodKey := ca.issue(t, "good", "good", false)
	badCert, badKey := ca.issue(t, "bad", "bad", false)
	crl := ca.path("revoked.crl")
	ca.writeCRL(t, crl, badCert)
	m := startCRLServer(t, kind, srvCert, srvKey, ca.path("ca.pem"), crl, split)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	put := func(certFile, keyFile, endpoint string) error {
		cli := tlsClient(t, endpoint, clientTLS(t, ca, certFile, keyFile))
		defer cli.Close()
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := cli.Put(c, "k", "v")
		return err
	}
	health := func(certFile, keyFile, endpoint string) error {
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS(t, ca, certFile, keyFile)}, Timeout: 3 * time.Second}
		defer hc.CloseIdleConnections()
		resp, err := hc.Get(endpoint + "/health")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var h map[string]string
		if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
			return err
		}
		if h["health"] != "true" {
			return fmt.Errorf("health %v", h)
		}
		return nil
	}
	if err := put(badCert, badKey, m.grpcURL); err == nil {
		t.Fatal("put with a revoked certificate succeeded")
	}
	if err := put(goodCert, goodKey, m.grpcURL); err != nil {
		t.Fatalf("put with a good certificate: %v", err)
	}
	if err := health(badCert, badKey, m.httpURL); err == nil {
		t.Error("/health with a revoked certificate answered")
	}
	if err := health(goodCert, goodKey, m.httpURL); err != nil {
		t.Errorf("/health with a good certificate: %v", err)
	}
	if split {
		if err := health(goodCert, goodKey, m.grpcURL); err == nil {
			t.Error("/health answered on the gRPC-only client URL")
		}
		if err := put(goodCert, goodKey, m.httpURL); err == nil {
			t.Error("gRPC served on the HTTP URL")
		}
	}
	// The good certificate revoked too: refused from the next connection.
	time.Sleep(10 * time.Millisecond) // a new modification time
	ca.writeCRL(t, crl, badCert, goodCert)
	if err := put(goodCert, goodKey, m.grpcURL); err == nil {
		t.Error("put with a certificate revoked by the rewritten list succeeded")
	}
}
