package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/metastore-dev/metastore/server/config"
)

// TestReloadableLogger: a logger derived with With and WithGroup before a
// reload keeps its attributes in the new format; the level applies to
// every derived logger at once.
func TestReloadableLogger(t *testing.T) {
	var buf bytes.Buffer
	lg, set := newReloadableLogger(config.Logging{Level: "info", Format: "text"}, &buf)
	comp := lg.With("component", "mvcc").WithGroup("g")
	comp.Info("one", "k", 1)
	comp.Debug("hidden")
	if got := buf.String(); !strings.Contains(got, "level=INFO msg=one component=mvcc g.k=1") || strings.Contains(got, "hidden") {
		t.Fatalf("text: %q", got)
	}
	buf.Reset()
	if err := set(config.Logging{Level: "debug", Format: "json"}); err != nil {
		t.Fatal(err)
	}
	comp.Debug("two", "k", 2)
	if got := buf.String(); !strings.Contains(got, `"level":"DEBUG","msg":"two","component":"mvcc","g":{"k":2}}`) {
		t.Fatalf("json after reload: %q", got)
	}
	buf.Reset()
	set(config.Logging{Level: "error", Format: "json"})
	comp.Warn("dropped")
	lg.Error("kept")
	if got := buf.String(); strings.Contains(got, "dropped") || !strings.Contains(got, `"msg":"kept"`) {
		t.Fatalf("level error: %q", got)
	}
}
