package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCPUProfile: CPUPROFILE_PATH gets a gzip-compressed pprof profile once
// the run stops; an unwritable path is reported and nothing is profiled;
// without the variable nothing is written.
func TestCPUProfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cpu.pprof")
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == cpuProfileEnv {
				return v
			}
			return ""
		}
	}
	var stderr bytes.Buffer
	stop := startCPUProfile(env(path), &stderr)
	sum := 0
	for i := range 1_000_000 {
		sum += i % 7
	}
	stop()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Fatalf("profile is not gzip (pprof's format): % x", b[:min(len(b), 8)])
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr: %q", stderr.String())
	}

	stop = startCPUProfile(env(filepath.Join(t.TempDir(), "missing", "cpu.pprof")), &stderr)
	stop()
	if !strings.Contains(stderr.String(), "no CPU profile") {
		t.Errorf("unwritable path not reported: %q", stderr.String())
	}
	// A second profile can start: the failed one left none running.
	stop = startCPUProfile(env(filepath.Join(t.TempDir(), "again.pprof")), &stderr)
	stop()
	if strings.Count(stderr.String(), "no CPU profile") != 1 {
		t.Errorf("stderr: %q", stderr.String())
	}
	startCPUProfile(env(""), &stderr)()
	_ = sum
}
