package wasmhost

import (
	"context"
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
			c.Limits = Limits{AuthorizeTimeout: deadline, Instances: 1}
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
			c.Limits = Limits{AuthorizeTimeout: time.Minute, Fuel: 10_000_000, Instances: 1}
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
