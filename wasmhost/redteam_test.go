package wasmhost

import (
	"context"
	"errors"
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
	for _, name := range []string{"wide-loop", "wide-loop-block", "wide-hostcalls", "log-flood", "leaf-loop", "fanout-noloop"} {
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
