package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

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
	if got := buf.String(); !strings.Contains(got, `"level":"debug","caller":"metastore/logger_test.go:`) ||
		!strings.Contains(got, `"msg":"two","component":"mvcc","g":{"k":2}}`) {
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

// TestJSONLogIsEtcdShaped reads JSON lines as etcd's e2e tests read etcd's
// (TestServerJsonLogging, TestNoErrorLogsDuringNormalOperations): level in
// lower case, ts in etcd's layout, caller as dir/file.go:line, msg; and
// durations as zap writes them.
func TestJSONLogIsEtcdShaped(t *testing.T) {
	var buf bytes.Buffer
	lg, _ := newReloadableLogger(config.Logging{Level: "debug", Format: "json"}, &buf)
	lg = lg.With("component", "x")
	_, _, line, _ := runtime.Caller(0)
	lg.Warn("w", "took", 1500*time.Millisecond, "time", "not a time")
	lg.Error("e", "err", "boom")
	lg.Debug("d", slog.Group("g", "d", time.Second))

	type entry struct {
		Level, TS, Caller, Msg string
		Took, Time             any
		G                      map[string]any
	}
	var got []entry
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not JSON: %s", l)
		}
		e := entry{}
		e.Level, _ = m["level"].(string)
		e.TS, _ = m["ts"].(string)
		e.Caller, _ = m["caller"].(string)
		e.Msg, _ = m["msg"].(string)
		e.Took, e.Time = m["took"], m["time"]
		e.G, _ = m["g"].(map[string]any)
		if _, err := time.Parse("2006-01-02T15:04:05.999999Z0700", e.TS); err != nil {
			t.Errorf("ts %q: %v", e.TS, err)
		}
		got = append(got, e)
	}
	if len(got) != 3 {
		t.Fatalf("%d lines, want 3:\n%s", len(got), buf.String())
	}
	if w := got[0]; w.Level != "warn" || w.Msg != "w" || w.Caller != "metastore/logger_test.go:"+strconv.Itoa(line+1) ||
		w.Took != "1.5s" || w.Time != "not a time" {
		t.Errorf("warn line: %+v", w)
	}
	if got[1].Level != "error" || got[2].Level != "debug" || got[2].G["d"] != "1s" {
		t.Errorf("error/debug lines: %+v %+v", got[1], got[2])
	}
}
