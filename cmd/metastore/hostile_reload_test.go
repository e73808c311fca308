package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/metastore-dev/metastore/wasmhost/wasmtest"
)

// writeGate writes dir/metastore.yaml with one admit policy "gate" running
// module (a wasmtest fixture) under the given init deadline ("" = 1s).
func writeGate(t *testing.T, dir, module, initTimeout string) string {
	t.Helper()
	bin := wasmtest.Modules()[module]
	if err := os.WriteFile(filepath.Join(dir, module+".wasm"), bin, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(bin)
	limits := ""
	if initTimeout != "" {
		limits = ", limits: {init_timeout: " + initTimeout + "}"
	}
	cfg := filepath.Join(dir, "metastore.yaml")
	yaml := fmt.Sprintf("authorization: {policy_watch_interval: 0s}\npolicies:\n  - {name: gate, module: %s.wasm, sha256: %s, hooks: [admit]%s}\n",
		module, hex.EncodeToString(sum[:]), limits)
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestStartupWithHangingModule: a module whose start function never
// returns fails start-up with exit 1 and the deadline named, in about the
// init deadline.
func TestStartupWithHangingModule(t *testing.T) {
	dir := t.TempDir()
	cfg := writeGate(t, dir, "start-loop", "")
	var out, errb bytes.Buffer
	start := time.Now()
	code := run(context.Background(), []string{"--config-file", cfg, "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", "http://127.0.0.1:0"}, nil, &out, &errb)
	took := time.Since(start)
	if code != 1 || !strings.Contains(errb.String(), "cannot start metastore") ||
		!strings.Contains(errb.String(), "deadline of 1s exceeded") || !strings.Contains(errb.String(), "start-loop.wasm") {
		t.Fatalf("exit %d:\n%s", code, errb.String())
	}
	t.Logf("start-up refused after %v", took)
	if took > 10*time.Second {
		t.Fatalf("start-up took %v", took)
	}
}

// TestSIGHUPToHangingModule: SIGHUP reloads to modules whose start or
// policy_init never return are refused (the old module keeps serving) and
// do not block the next reload.
func TestSIGHUPToHangingModule(t *testing.T) {
	dir := t.TempDir()
	cfg := writeGate(t, dir, "deny", "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr lockedBuffer
	done := make(chan int, 1)
	go func() {
		var out bytes.Buffer
		done <- run(ctx, []string{"--config-file", cfg, "--data-dir", filepath.Join(dir, "data"),
			"--listen-client-urls", "http://127.0.0.1:0"}, nil, &out, &stderr)
	}()
	waitCount := func(s string, n int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for strings.Count(stderr.String(), s) < n {
			if time.Now().After(deadline) {
				t.Fatalf("log lacks %d× %q:\n%s", n, s, stderr.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitCount("ready to serve client requests", 1)
	for i, module := range []string{"start-loop", "init-loops"} {
		writeGate(t, dir, module, "200ms")
		start := time.Now()
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitCount("reload refused; the previous policies and tenants keep serving", i+1)
		t.Logf("SIGHUP reload to %s refused after %v", module, time.Since(start))
	}
	if !strings.Contains(stderr.String(), "deadline of 200ms exceeded") {
		t.Errorf("the refusal does not name the deadline:\n%s", stderr.String())
	}
	writeGate(t, dir, "allow", "")
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitCount(`msg="reloaded policy" policy=gate`, 1)
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d:\n%s", code, stderr.String())
	}
}

// TestStartupRefusesInvalidModules: modules that are invalid as submitted
// (an index that only the host's rewriting would make valid, a vector
// claiming 2^32 entries), over a structural limit (100k functions) or a
// compile bomb are refused at start-up, quickly, with exit 1 naming the
// file — through the real binary's run, not only wasmhost.
func TestStartupRefusesInvalidModules(t *testing.T) {
	for _, module := range []string{"oob-global", "huge-vector", "many-functions", "bomb-nested-blocks", "bomb-many-locals", "shared-memory-wait"} {
		t.Run(module, func(t *testing.T) {
			dir := t.TempDir()
			cfg := writeGate(t, dir, module, "")
			var out, errb bytes.Buffer
			start := time.Now()
			code := run(context.Background(), []string{"--config-file", cfg, "--data-dir", filepath.Join(dir, "data"),
				"--listen-client-urls", "http://127.0.0.1:0"}, nil, &out, &errb)
			took := time.Since(start)
			if code != 1 || !strings.Contains(errb.String(), "cannot start metastore") || !strings.Contains(errb.String(), module+".wasm") {
				t.Fatalf("exit %d:\n%s", code, errb.String())
			}
			t.Logf("refused after %v: %s", took, strings.TrimSpace(errb.String()))
			if took > 10*time.Second {
				t.Fatalf("start-up took %v", took)
			}
		})
	}
}
