package ops

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/metastore-dev/metastore/server/config"
	"github.com/metastore-dev/metastore/tests/framework"
)

// TestGatewayTLS: the JSON gateway on an https:// client port with
// client-certificate auth, as etcd serves it. Gateway requests authenticate
// by token only: once auth is enabled a request whose certificate names a
// user is refused with etcd's 400, a certificate without a CN plus a token
// works, and gRPC clients keep authenticating by CN.
func TestGatewayTLS(t *testing.T) {
	t.Parallel()
	ca := newCA(t, "test-ca")
	srvCert, srvKey := ca.issue(t, "server", "metastore", true)
	aliceCert, aliceKey := ca.issue(t, "alice", "alice", false)
	anonCert, anonKey := ca.issue(t, "anon", "", false)
	m := framework.StartMetastoreConfig(t, func(c *config.Config) {
		c.Server.ListenClientURLs = []string{"https://127.0.0.1:0"}
		c.Server.TLS = config.TLS{CertFile: srvCert, KeyFile: srvKey, TrustedCAFile: ca.path("ca.pem"), ClientCertAuth: true}
		c.Auth.BcryptCost = 4
	})
	ep := "https://" + m.Endpoint
	httpsClient := func(certFile, keyFile string) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS(t, ca, certFile, keyFile)}, Timeout: 10 * time.Second}
	}
	alice, anon := httpsClient(aliceCert, aliceKey), httpsClient(anonCert, anonKey)
	// curl and browsers negotiate h2 on https: those requests share the
	// ALPN protocol with gRPC and must still reach the HTTP handler.
	anonH2 := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS(t, ca, anonCert, anonKey), ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
	post := func(hc *http.Client, path, token, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, ep+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			m = map[string]any{"text": string(raw)}
		}
		return resp.StatusCode, m
	}
	key := base64.StdEncoding.EncodeToString([]byte("k"))
	rangeK := fmt.Sprintf(`{"key":%q}`, key)

	// Auth disabled: any trusted client certificate may use the gateway.
	if code, body := post(alice, "/v3/kv/put", "", fmt.Sprintf(`{"key":%q,"value":"dg=="}`, key)); code != 200 {
		t.Fatalf("put over https: %d %v", code, body)
	}
	for _, step := range []struct{ path, body string }{
		{"/v3/auth/user/add", `{"name":"root","password":"pw"}`},
		{"/v3/auth/user/grant", `{"user":"root","role":"root"}`},
		{"/v3/auth/user/add", `{"name":"alice","password":"pw"}`},
		{"/v3/auth/enable", `{}`},
	} {
		if code, body := post(anon, step.path, "", step.body); code != 200 {
			t.Fatalf("%s: %d %v", step.path, code, body)
		}
	}

	// Auth enabled: a CN on the gateway is refused, as etcd does.
	code, body := post(alice, "/v3/kv/range", "", rangeK)
	const cnRefused = "CommonName of client sending a request against gateway will be ignored and not used as expected"
	if code != http.StatusBadRequest || strings.TrimSpace(fmt.Sprint(body["text"])) != cnRefused {
		t.Fatalf("gateway request with a CN certificate: %d %v", code, body)
	}
	// Outside /v3/ the CN does not matter.
	resp, err := alice.Get(ep + "/health")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/health with a CN certificate: %v %v", resp, err)
	}
	resp.Body.Close()
	// Without a CN: no token is nobody; a token is its user.
	code, body = post(anon, "/v3/kv/range", "", rangeK)
	if code != http.StatusBadRequest || body["message"] != rpctypes.ErrGRPCUserEmpty.Error()[len("rpc error: code = InvalidArgument desc = "):] {
		t.Fatalf("range without a token: %d %v", code, body)
	}
	code, body = post(anon, "/v3/auth/authenticate", "", `{"name":"root","password":"pw"}`)
	token, _ := body["token"].(string)
	if code != 200 || token == "" {
		t.Fatalf("authenticate over https: %d %v", code, body)
	}
	if code, body = post(anon, "/v3/kv/range", token, rangeK); code != 200 || body["count"] != "1" {
		t.Fatalf("range with a token over https: %d %v", code, body)
	}
	req, _ := http.NewRequest(http.MethodPost, ep+"/v3/kv/range", strings.NewReader(rangeK))
	req.Header.Set("Authorization", token)
	resp, err = anonH2.Do(req)
	if err != nil {
		t.Fatalf("range over h2: %v", err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 || !strings.Contains(string(raw), `"count":"1"`) {
		t.Fatalf("range over h2: %s %d %s", resp.Proto, resp.StatusCode, raw)
	}
	// A stream over h2: a watch sees a put made through gRPC.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ = http.NewRequestWithContext(ctx, http.MethodPost, ep+"/v3/watch", strings.NewReader(fmt.Sprintf(`{"create_request":{"key":%q}}`, key)))
	req.Header.Set("Authorization", token)
	wresp, err := anonH2.Do(req)
	if err != nil || wresp.ProtoMajor != 2 {
		t.Fatalf("watch over h2: %v %v", wresp, err)
	}
	defer wresp.Body.Close()
	lines := bufio.NewReader(wresp.Body)
	if line, err := lines.ReadString('\n'); err != nil || !strings.Contains(line, `"created":true`) {
		t.Fatalf("watch over h2: %q %v", line, err)
	}
	if code, body = post(anon, "/v3/kv/put", token, fmt.Sprintf(`{"key":%q,"value":"eA=="}`, key)); code != 200 {
		t.Fatalf("put: %d %v", code, body)
	}
	if line, err := lines.ReadString('\n'); err != nil || !strings.Contains(line, `"value":"eA=="`) {
		t.Fatalf("watch event over h2: %q %v", line, err)
	}
	hresp, err := anonH2.Get(ep + "/health")
	if err != nil || hresp.ProtoMajor != 2 || hresp.StatusCode != 200 {
		t.Fatalf("/health over h2: %v %v", hresp, err)
	}
	hresp.Body.Close()

	// gRPC over the same port still takes the CN as the user: alice has
	// no permission on k.
	cli := tlsClient(t, ep, clientTLS(t, ca, aliceCert, aliceKey))
	if _, err := cli.Get(ctx, "k"); err == nil || !strings.Contains(err.Error(), rpctypes.ErrPermissionDenied.Error()) {
		t.Fatalf("gRPC get as alice by CN: %v, want %v", err, rpctypes.ErrPermissionDenied)
	}
}
