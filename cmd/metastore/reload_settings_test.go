package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestSIGHUPReloadsSettingsUnderLoad: under a steady load of puts and
// ranges, SIGHUP reloads change the unary rate limit, the log format and
// the log level at once; a changed setting that takes a restart is named
// in the log and counted as restart_required; no request fails.
func TestSIGHUPReloadsSettingsUnderLoad(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "metastore.yaml")
	writeConfig := func(yaml string) {
		t.Helper()
		if err := os.WriteFile(cfgPath, []byte("authorization: {policy_watch_interval: 0s}\n"+yaml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig("logging: {level: info, format: text}\n")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr lockedBuffer
	done := make(chan int, 1)
	go func() {
		var out bytes.Buffer
		done <- run(ctx, []string{"--config-file", cfgPath, "--data-dir", filepath.Join(dir, "data"),
			"--listen-client-urls", "http://127.0.0.1:0"}, nil, &out, &stderr)
	}()
	waitFor := func(re string) string {
		t.Helper()
		r := regexp.MustCompile(re)
		deadline := time.Now().Add(20 * time.Second)
		for {
			if m := r.FindStringSubmatch(stderr.String()); m != nil {
				return m[len(m)-1]
			}
			if time.Now().After(deadline) {
				t.Fatalf("log lacks %q:\n%s", re, stderr.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	addr := waitFor(`msg="ready to serve client requests" address=(\S+)`)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	kv := pb.NewKVClient(conn)

	// The load: 4 clients putting and reading until the end.
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for c := range 4 {
		wg.Go(func() {
			for i := 0; loadCtx.Err() == nil; i++ {
				key := []byte(fmt.Sprintf("k%d-%d", c, i%100))
				_, err := kv.Put(loadCtx, &pb.PutRequest{Key: key, Value: key})
				if err == nil {
					_, err = kv.Range(loadCtx, &pb.RangeRequest{Key: key})
				}
				switch {
				case err == nil:
					ok.Add(1)
				case loadCtx.Err() == nil:
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		})
	}
	waitLoad := func() {
		t.Helper()
		n := ok.Load()
		for ok.Load() < n+50 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	metric := func(name string) string {
		t.Helper()
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(string(b))
		if m == nil {
			return ""
		}
		return m[1]
	}
	hup := func() {
		t.Helper()
		waitLoad()
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}

	// A: a unary limit far above the load, and JSON logs.
	writeConfig("limits: {unary_rate_limit: 1000000, unary_rate_burst: 1000000}\nlogging: {level: info, format: json}\n")
	hup()
	waitFor(`\{"ts":"[^"]+","level":"info","caller":"server/reload.go:\d+","msg":"reload: log settings changed","log-level":"info","log-format":"json"\}`)
	if got := metric(`metastore_server_rate_limit{scope="unary"}`); got != "1e+06" {
		t.Errorf("unary rate limit after the first reload: %q, want 1e+06", got)
	}

	// B: another limit, the level raised to warn, and max_txn_ops, which
	// takes a restart.
	writeConfig("limits: {unary_rate_limit: 500000, max_txn_ops: 256}\nlogging: {level: warn, format: json}\n")
	hup()
	waitFor(`"level":"warn","caller":"[^"]+","msg":"reload: these settings changed but take effect only after a restart; the running values are kept","settings":\["limits.max_txn_ops"\]`)
	if got := metric(`metastore_server_rate_limit{scope="unary"}`); got != "500000" {
		t.Errorf("unary rate limit after the second reload: %q, want 500000", got)
	}
	// C: the same file again. At warn, the SIGHUP's info line is no longer
	// logged, the restart warning is.
	before := strings.Count(stderr.String(), "take effect only after a restart")
	hup()
	for strings.Count(stderr.String(), "take effect only after a restart") == before {
		time.Sleep(10 * time.Millisecond)
	}
	if n := strings.Count(stderr.String(), "SIGHUP: reloading the configuration"); n != 2 {
		t.Errorf("the SIGHUP info line was logged %d times, want 2 (not at level warn):\n%s", n, stderr.String())
	}
	waitLoad()
	for result, want := range map[string]string{"ok": "1", "restart_required": "2"} {
		if got := metric(`metastore_config_reloads_total{result="` + result + `"}`); got != want {
			t.Errorf("metastore_config_reloads_total{result=%q} = %q, want %s", result, got, want)
		}
	}
	stopLoad()
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Errorf("%d requests failed during the reloads (first: %v)", n, firstErr.Load())
	}
	t.Logf("%d put+range pairs served across 3 reloads", ok.Load())
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d:\n%s", code, stderr.String())
	}
}
