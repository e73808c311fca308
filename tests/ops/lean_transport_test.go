package ops

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/metastore-dev/metastore/server/config"
	"github.com/metastore-dev/metastore/tests/framework"
)

// TestLeanTransport runs clientv3 over grpc.transport: lean (server/serve/
// h2grpc), on plaintext and on mutual TLS with auth by client-certificate
// CN: unary calls and their etcd errors, watch, lease keep-alive, a
// snapshot and ranges far larger than HTTP/2's windows, sessions. It names
// the transport explicitly, so it keeps covering lean should the default
// (lean since issue 19) change back to grpc-go.
func TestLeanTransport(t *testing.T) {
	t.Parallel()
	t.Run("plaintext", func(t *testing.T) {
		t.Parallel()
		m := framework.StartMetastoreConfig(t, func(c *config.Config) { c.GRPC.Transport = config.TransportLean })
		leanScenario(t, tlsClient(t, m.Endpoint, nil), false)
	})
	t.Run("mtls", func(t *testing.T) {
		t.Parallel()
		ca := newCA(t, "test-ca")
		srvCert, srvKey := ca.issue(t, "server", "metastore", true)
		rootCert, rootKey := ca.issue(t, "root", "root", false)
		m := framework.StartMetastoreConfig(t, func(c *config.Config) {
			c.GRPC.Transport = config.TransportLean
			c.Server.ListenClientURLs = []string{"https://127.0.0.1:0"}
			c.Server.TLS = config.TLS{CertFile: srvCert, KeyFile: srvKey, TrustedCAFile: ca.path("ca.pem"), ClientCertAuth: true}
		})
		cli := tlsClient(t, "https://"+m.Endpoint, clientTLS(t, ca, rootCert, rootKey))
		leanScenario(t, cli, true)
	})
}

func leanScenario(t *testing.T, cli *clientv3.Client, certAuth bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if certAuth {
		// With auth on, the certificate's CN (root) is the user.
		if _, err := cli.UserAdd(ctx, "root", "pw"); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.UserGrantRole(ctx, "root", "root"); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.AuthEnable(ctx); err != nil {
			t.Fatal(err)
		}
	}
	put, err := cli.Put(ctx, "k", "v")
	if err != nil {
		t.Fatal(err)
	}
	if r, err := cli.Get(ctx, "k"); err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "v" {
		t.Fatalf("get: %v %v", r, err)
	}
	if _, err := cli.Get(ctx, "k", clientv3.WithRev(put.Header.Revision+100)); !errors.Is(err, rpctypes.ErrFutureRev) {
		t.Fatalf("future revision: %v, want %v", err, rpctypes.ErrFutureRev)
	}
	if _, err := cli.Put(ctx, "", "v"); !errors.Is(err, rpctypes.ErrEmptyKey) {
		t.Fatalf("empty key: %v, want %v", err, rpctypes.ErrEmptyKey)
	}
	if _, err := cli.Put(ctx, "big", strings.Repeat("x", 1600*1024)); !errors.Is(err, rpctypes.ErrRequestTooLarge) {
		t.Fatalf("put over max_request_bytes: %v, want %v", err, rpctypes.ErrRequestTooLarge)
	}
	tx, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.Value("k"), "=", "v")).Then(clientv3.OpPut("k", "w")).Commit()
	if err != nil || !tx.Succeeded {
		t.Fatalf("txn: %v %v", tx, err)
	}

	// Watch: events of later writes, in order.
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	wch := cli.Watch(wctx, "w/", clientv3.WithPrefix())
	for i := range 50 {
		if _, err := cli.Put(ctx, fmt.Sprintf("w/%02d", i), "x"); err != nil {
			t.Fatal(err)
		}
	}
	for seen := 0; seen < 50; {
		wr, ok := <-wch
		if !ok || wr.Err() != nil {
			t.Fatalf("watch ended after %d events: %v", seen, wr.Err())
		}
		for _, ev := range wr.Events {
			if want := fmt.Sprintf("w/%02d", seen); string(ev.Kv.Key) != want {
				t.Fatalf("event %d is %s, want %s", seen, ev.Kv.Key, want)
			}
			seen++
		}
	}

	// Lease keep-alive stream.
	lg, err := cli.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	if ka, err := cli.KeepAliveOnce(ctx, lg.ID); err != nil || ka.TTL <= 0 {
		t.Fatalf("keep-alive: %v %v", ka, err)
	}
	if _, err := cli.KeepAliveOnce(ctx, lg.ID+1); !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		t.Fatalf("keep-alive of an unknown lease: %v", err)
	}

	// 24 MiB of values: a range and a snapshot far beyond the windows.
	val := bytes.Repeat([]byte("v"), 1<<20)
	for i := range 24 {
		if _, err := cli.Put(ctx, fmt.Sprintf("big/%02d", i), string(val)); err != nil {
			t.Fatal(err)
		}
	}
	r, err := cli.Get(ctx, "big/", clientv3.WithPrefix())
	if err != nil || len(r.Kvs) != 24 {
		t.Fatalf("large range: %v", err)
	}
	rc, err := cli.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, rc)
	rc.Close()
	if err != nil || n < 24<<20 {
		t.Fatalf("snapshot: %d bytes, %v", n, err)
	}

	// Lock and Election (server/v3lock) through a session.
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mu := concurrency.NewMutex(s, "lock/")
	if err := mu.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := mu.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	e := concurrency.NewElection(s, "elect/")
	if err := e.Campaign(ctx, "me"); err != nil {
		t.Fatal(err)
	}
	if l, err := e.Leader(ctx); err != nil || string(l.Kvs[0].Value) != "me" {
		t.Fatalf("leader: %v %v", l, err)
	}
}
