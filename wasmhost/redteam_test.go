package wasmhost

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWorkBetweenCheckIns: guests whose work between two fuel check-ins
// is not one loop iteration but a 400,000-instruction loop body, a loop
// body of 100,000 host calls or 1,000 log calls, a loop calling a
// 400,000-instruction leaf function, or a loop-free fan-out of calls
// (4·10^12 instructions behind 10^6 function entries) are stopped near
// their deadline, and a fuel budget stops them too.
func TestWorkBetweenCheckIns(t *testing.T) {
	rec := &recorder{}
	h := newHost(t, rec)
	req := testRequest(t)
	const deadline = 5 * time.Millisecond
	var worst time.Duration
	for _, name := range []string{"wide-loop", "wide-loop-block", "wide-hostcalls", "log-flood", "leaf-loop", "fanout-noloop", "wide-loop-small", "leaf-loop-small"} {
		p := load(t, h, name, func(c *Config) {
			// The wide bodies are 1 MB: over function_bytes' default,
			// within what an operator may allow.
			c.Limits = Limits{AuthorizeTimeout: deadline, Instances: 1, FunctionBytes: 2 << 20}
		})
		for i := 0; i < 3; i++ {
			start := time.Now()
			d := p.Authorize(context.Background(), req)
			took := time.Since(start)
			worst = max(worst, took)
			t.Logf("%s: %v after %v", name, d.Kind, took)
			if d.Kind != KindTimeout || d.Verdict != Deny {
				t.Fatalf("%s: %+v", name, d)
			}
			if took > 100*time.Millisecond {
				t.Errorf("%s: stopped after %v against a %v deadline", name, took, deadline)
			}
		}
		f := load(t, h, name, func(c *Config) {
			c.Name = name + "-fuel"
			c.Limits = Limits{AuthorizeTimeout: time.Minute, Fuel: 10_000_000, Instances: 1, FunctionBytes: 2 << 20}
		})
		start := time.Now()
		if d := f.Authorize(context.Background(), req); d.Kind != KindFuel || d.Verdict != Deny {
			t.Fatalf("%s with a fuel budget: %+v", name, d)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("%s: a budget of 10^7 units stopped it after %v", name, took)
		}
	}
	t.Logf("worst hostile call against a %v deadline: %v", deadline, worst)
}

// TestCompileBombs: small modules whose compilation would cost minutes
// and gigabytes (1M nested blocks, a br_table of 3M targets, 20,000
// functions of 10,000 locals, one 15 MB function, a 1.5 MB function
// with a deep operand stack) are refused by a structural limit in
// milliseconds, before any compiler sees them; a function of many
// blocks within the code limits is refused by its compile cost.
func TestCompileBombs(t *testing.T) {
	h := newHost(t, nil)
	for name, want := range map[string]string{
		"bomb-nested-blocks": "limits.function_bytes",
		"bomb-br-table":      "limits.function_bytes",
		"bomb-many-locals":   "locals of all functions 199900005 is over the limit of 100000 (limits.locals)",
		"bomb-wide-loop":     "limits.function_bytes",
		"bomb-stack-height":  "limits.function_bytes",
		"bomb-ifs":           "blocks once metered, over the limit of 5000 (limits.blocks_per_function)",
		"bomb-if-locals":     "(limits.compile_cost)",
	} {
		start := time.Now()
		_, err := h.Load(context.Background(), Config{Name: name, Binary: modules[name]})
		took := time.Since(start)
		var le *LoadError
		if !errors.As(err, &le) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want a LoadError with %q", name, err, want)
		}
		t.Logf("%s (%d bytes) refused in %v", name, len(modules[name]), took)
		if took > time.Second {
			t.Errorf("%s: refusing it took %v", name, took)
		}
	}
}

// TestCacheDirTrust: the compilation cache holds native code and
// validation marks, so a directory others may write to is refused, and a
// mark that this host did not write (writable by others, a symlink, empty
// as older marks were, or naming another digest) does not let an invalid
// module skip the validator.
func TestCacheDirTrust(t *testing.T) {
	open := t.TempDir()
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := NewHost(Options{CacheDir: open}); err == nil || !strings.Contains(err.Error(), "writable by other users") {
		t.Fatalf("world-writable cache dir: %v", err)
	}

	dir := t.TempDir()
	h, err := NewHost(Options{CacheDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(context.Background()) })
	bin := modules["oob-global"]
	sum := sha256.Sum256(bin)
	key := fmt.Sprintf("validated-%s-%d-wazero-%s", hex.EncodeToString(sum[:]), DefaultLimits().MemoryBytes>>16, validatorVersion())
	mark := filepath.Join(dir, key)
	elsewhere := filepath.Join(t.TempDir(), "mark")
	for _, plant := range []struct {
		name string
		do   func() error
	}{
		{"writable by others", func() error {
			if err := os.WriteFile(mark, []byte(key), 0o600); err != nil {
				return err
			}
			return os.Chmod(mark, 0o666)
		}},
		{"empty", func() error { return os.WriteFile(mark, nil, 0o600) }},
		{"symlink", func() error {
			if err := os.WriteFile(elsewhere, []byte(key), 0o600); err != nil {
				return err
			}
			return os.Symlink(elsewhere, mark)
		}},
		{"another key", func() error { return os.WriteFile(mark, []byte(key+"0"), 0o600) }},
	} {
		os.Remove(mark)
		if err := plant.do(); err != nil {
			t.Fatal(err)
		}
		_, err := h.Load(context.Background(), Config{Name: "oob", Binary: bin})
		if err == nil || !strings.Contains(err.Error(), "invalid module") {
			t.Errorf("mark %s: the invalid module got %v", plant.name, err)
		}
	}
	// A valid module leaves a mark that a later host trusts.
	p, err := h.Load(context.Background(), Config{Name: "allow", Binary: modules["allow"]})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	sum = sha256.Sum256(modules["allow"])
	good := fmt.Sprintf("validated-%s-%d-wazero-%s", hex.EncodeToString(sum[:]), DefaultLimits().MemoryBytes>>16, validatorVersion())
	if !trustedMark(filepath.Join(dir, good), good) {
		t.Errorf("the host's own mark is not trusted")
	}
}

// TestFeaturesOff: a shared memory with memory.atomic.wait32 (which would
// block its thread) and a return_call loop are refused by the validator:
// threads and tail calls are not enabled.
func TestFeaturesOff(t *testing.T) {
	h := newHost(t, nil)
	for _, name := range []string{"shared-memory-wait", "tail-call-loop"} {
		_, err := h.Load(context.Background(), Config{Name: name, Binary: modules[name]})
		var le *LoadError
		if !errors.As(err, &le) || !strings.Contains(err.Error(), "invalid module") {
			t.Errorf("%s: got %v, want a LoadError from the validator", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
}
