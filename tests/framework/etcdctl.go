package framework

import (
	"bytes"
	"context"
	"io"
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
	return runEtcdctl(t, EtcdctlBinary(t), endpoint, stdin, args)
}

func runEtcdctl(t testing.TB, bin, endpoint, stdin string, args []string) EtcdctlResult {
	t.Helper()
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

// CtlProcess is an etcdctl command left running in the background, such
// as `etcdctl watch`.
type CtlProcess struct {
	t      testing.TB
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan struct{}
	code   int
}

// StartEtcdctl starts etcdctl with --endpoints=endpoint and args in the
// background; it is killed on cleanup if still running.
func StartEtcdctl(t testing.TB, endpoint string, args ...string) *CtlProcess {
	t.Helper()
	bin := EtcdctlBinary(t)
	full := append([]string{"--endpoints=" + endpoint, "--dial-timeout=10s", "--command-timeout=30s"}, args...)
	cmd := exec.Command(bin, full...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCDCTL_") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, raceEnv)
	p := &CtlProcess{t: t, cmd: cmd, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatalf("etcdctl %v: %v", args, err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("etcdctl %v: %v", args, err)
	}
	go func() {
		err := cmd.Wait()
		if ee, ok := err.(*exec.ExitError); ok {
			p.code = ee.ExitCode()
		}
		close(p.done)
	}()
	t.Cleanup(func() { p.Kill() })
	return p
}

// Write sends s to the command's standard input.
func (p *CtlProcess) Write(s string) {
	p.t.Helper()
	if _, err := io.WriteString(p.stdin, s); err != nil {
		p.t.Fatalf("etcdctl stdin: %v", err)
	}
}

// Stdout returns what the command printed so far.
func (p *CtlProcess) Stdout() string { return p.stdout.String() }

// Stderr returns what the command printed on standard error so far.
func (p *CtlProcess) Stderr() string { return p.stderr.String() }

// WaitStdout waits until cond holds for the standard output, or timeout;
// it reports whether it did.
func (p *CtlProcess) WaitStdout(cond func(string) bool, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond(p.stdout.String()) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-p.done:
			return cond(p.stdout.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Wait waits for the command to exit on its own and returns its result;
// ok is false if it did not within timeout.
func (p *CtlProcess) Wait(timeout time.Duration) (EtcdctlResult, bool) {
	select {
	case <-p.done:
		return EtcdctlResult{Stdout: p.stdout.String(), Stderr: p.stderr.String(), ExitCode: p.code}, true
	case <-time.After(timeout):
		return EtcdctlResult{Stdout: p.stdout.String(), Stderr: p.stderr.String()}, false
	}
}

// Kill stops the command (SIGKILL) if it is running and waits for it.
func (p *CtlProcess) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Kill()
	<-p.done
}
