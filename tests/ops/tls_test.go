package ops

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/metastore-dev/metastore/server/config"
	"github.com/metastore-dev/metastore/tests/framework"
)

func tlsClient(t *testing.T, endpoint string, tc *tls.Config) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		DialTimeout: 5 * time.Second,
		TLS:         tc,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// TestMutualTLS: with --client-cert-auth a client needs a certificate
// signed by the trusted CA; the certificate's CN is the request's user
// (observed through per-user rate limits, which key on it); /health is
// served over the same TLS port.
func TestMutualTLS(t *testing.T) {
	t.Parallel()
	ca := newCA(t, "test-ca")
	srvCert, srvKey := ca.issue(t, "server", "metastore", true)
	aliceCert, aliceKey := ca.issue(t, "alice", "alice", false)
	bobCert, bobKey := ca.issue(t, "bob", "bob", false)
	other := newCA(t, "other-ca")
	eveCert, eveKey := other.issue(t, "eve", "alice", false)

	m := framework.StartMetastoreConfig(t, func(c *config.Config) {
		c.Server.ListenClientURLs = []string{"https://127.0.0.1:0"}
		c.Server.TLS = config.TLS{CertFile: srvCert, KeyFile: srvKey, TrustedCAFile: ca.path("ca.pem"), ClientCertAuth: true}
		c.Limits.UserRateLimit, c.Limits.UserRateBurst = 1, 3
	})
	ep := "https://" + m.Endpoint
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	alice := tlsClient(t, ep, clientTLS(t, ca, aliceCert, aliceKey))
	if _, err := alice.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("put with a trusted client certificate: %v", err)
	}
	if r, err := alice.Get(ctx, "k"); err != nil || len(r.Kvs) != 1 {
		t.Fatalf("get: %v %v", r, err)
	}
	// Alice's bucket (burst 3) is now empty; Bob has his own.
	var limited error
	for range 5 {
		if _, limited = alice.Get(ctx, "k"); limited != nil {
			break
		}
	}
	if !errors.Is(limited, rpctypes.ErrTooManyRequests) {
		t.Fatalf("alice beyond her rate: %v, want %v", limited, rpctypes.ErrTooManyRequests)
	}
	bob := tlsClient(t, ep, clientTLS(t, ca, bobCert, bobKey))
	if _, err := bob.Get(ctx, "k"); err != nil {
		t.Fatalf("bob is limited by alice's bucket: %v", err)
	}

	refused := func(name string, tc *tls.Config, endpoint string) {
		t.Helper()
		cli := tlsClient(t, endpoint, tc)
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if _, err := cli.Get(c, "k"); err == nil {
			t.Errorf("%s: request succeeded", name)
		}
	}
	refused("no client certificate", clientTLS(t, ca, "", ""), ep)
	refused("certificate from another CA", clientTLS(t, ca, eveCert, eveKey), ep)
	refused("plaintext client", nil, "http://"+m.Endpoint)

	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS(t, ca, bobCert, bobKey)}, Timeout: 5 * time.Second}
	resp, err := hc.Get(ep + "/health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil || h["health"] != "true" {
		t.Fatalf("/health over TLS: %v %v", h, err)
	}
}

// TestServerTLS: TLS without a trusted CA encrypts but asks for no client
// certificate, as etcd.
func TestServerTLS(t *testing.T) {
	t.Parallel()
	ca := newCA(t, "test-ca")
	srvCert, srvKey := ca.issue(t, "server", "metastore", true)
	m := framework.StartMetastoreConfig(t, func(c *config.Config) {
		c.Server.ListenClientURLs = []string{"https://127.0.0.1:0"}
		c.Server.TLS = config.TLS{CertFile: srvCert, KeyFile: srvKey}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli := tlsClient(t, "https://"+m.Endpoint, clientTLS(t, ca, "", ""))
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("put over TLS: %v", err)
	}
	// A client that does not trust the server's CA refuses it.
	bad := tlsClient(t, "https://"+m.Endpoint, &tls.Config{ServerName: "127.0.0.1"})
	c, cancel2 := context.WithTimeout(ctx, 2*time.Second)
	defer cancel2()
	if _, err := bad.Get(c, "k"); err == nil {
		t.Fatal("a client that does not trust the CA connected")
	}
}
