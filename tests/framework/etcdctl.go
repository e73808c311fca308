package framework

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// EtcdctlResult is the outcome of one etcdctl run.
type EtcdctlResult struct {
	Stdout, Stderr string
	// ExitCode is the process exit code (0 on success).
	ExitCode int
}

// Etcdctl runs the real etcdctl (built once) with --endpoints=endpoint and
// args, feeding stdin. ETCDCTL_* variables of the environment are dropped so
// that the run is hermetic.
func Etcdctl(t testing.TB, endpoint, stdin string, args ...string) EtcdctlResult {
	t.Helper()
	bin := EtcdctlBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	full := append([]string{"--endpoints=" + endpoint, "--dial-timeout=10s", "--command-timeout=30s"}, args...)
	cmd := exec.CommandContext(ctx, bin, full...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCDCTL_") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, raceEnv)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := EtcdctlResult{Stdout: stdout.String(), Stderr: stderr.String()}
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			res.ExitCode = ee.ExitCode()
		} else {
			t.Fatalf("etcdctl %v: %v", args, err)
		}
	}
	return res
}
