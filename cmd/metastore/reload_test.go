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
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/metastore-dev/metastore/wasmhost/wasmtest"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestSIGHUPReloadsPolicies: SIGHUP re-reads the configuration file and
// reloads a policy whose module changed, adds a policy and removes one; a
// configuration that became invalid is refused and the old policies keep
// serving.
func TestSIGHUPReloadsPolicies(t *testing.T) {
	dir := t.TempDir()
	mods := wasmtest.Modules()
	cfgPath := filepath.Join(dir, "metastore.yaml")
	writeConfig := func(module string, sha string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, module+".wasm"), mods[module], 0o644); err != nil {
			t.Fatal(err)
		}
		if sha == "" {
			sum := sha256.Sum256(mods[module])
			sha = hex.EncodeToString(sum[:])
		}
		yaml := fmt.Sprintf("authorization: {policy_watch_interval: 0s}\npolicies:\n  - {name: gate, module: %s.wasm, sha256: %s, hooks: [admit]}\n", module, sha)
		if err := os.WriteFile(cfgPath, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig("deny", "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr lockedBuffer
	done := make(chan int, 1)
	go func() {
		var out bytes.Buffer
		done <- run(ctx, []string{"--config-file", cfgPath, "--data-dir", filepath.Join(dir, "data"),
			"--listen-client-urls", "http://127.0.0.1:0"}, nil, &out, &stderr)
	}()
	waitFor := func(s string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(stderr.String(), s) {
			if time.Now().After(deadline) {
				t.Fatalf("log lacks %q:\n%s", s, stderr.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// SIGHUP is handled once the server runs (the handler is installed
	// before Run logs this).
	waitFor("ready to serve client requests")

	writeConfig("allow", "")
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor("msg=\"reloaded policy\" policy=gate")

	// Add a policy, then remove the first: no restart.
	sum := sha256.Sum256(mods["noopinion"])
	if err := os.WriteFile(filepath.Join(dir, "noopinion.wasm"), mods["noopinion"], 0o644); err != nil {
		t.Fatal(err)
	}
	extra := fmt.Sprintf("  - {name: extra, module: noopinion.wasm, sha256: %s, hooks: [authorize]}\n", hex.EncodeToString(sum[:]))
	cur, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, append(cur, extra...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(`msg="reloaded policies" added=[extra] changed=[] removed=[]`)
	if err := os.WriteFile(cfgPath, []byte("authorization: {policy_watch_interval: 0s}\npolicies:\n"+extra), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(`msg="reloaded policies" added=[] changed=[] removed=[gate]`)

	writeConfig("deny", strings.Repeat("0", 64)) // the digest no longer matches
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor("reload refused; the previous policies and tenants keep serving")
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d:\n%s", code, stderr.String())
	}
}
