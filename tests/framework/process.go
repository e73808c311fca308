package framework

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Process is a server running as a subprocess on a fixed data directory and
// client port, so that it can be killed and restarted on the same state.
type Process struct {
	t        testing.TB
	Kind     string
	Bin      string
	Args     []string
	DataDir  string
	Endpoint string
	logPath  string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
	starts int
}

// StartMetastoreProcess builds (once) and starts the metastore binary with
// etcd-style flags on dataDir and a free loopback port, plus extra args.
func StartMetastoreProcess(t testing.TB, dataDir string, extra ...string) *Process {
	t.Helper()
	bin := MetastoreBinary(t)
	port := StablePort(t)
	args := []string{
		"--name", "default",
		"--data-dir", dataDir,
		"--listen-client-urls", localURL(port),
	}
	return startProcess(t, "metastore", bin, dataDir, "127.0.0.1:"+strconv.Itoa(port), append(args, extra...))
}

// StartEtcdProcess starts the reference etcd binary (built from
// ./tools/etcd) the same way, to prove subprocess scenarios against etcd.
func StartEtcdProcess(t testing.TB, dataDir string, extra ...string) *Process {
	t.Helper()
	bin := EtcdBinary(t)
	port, peer := StablePort(t), StablePort(t)
	args := []string{
		"--name", "default",
		"--data-dir", dataDir,
		"--listen-client-urls", localURL(port),
		"--advertise-client-urls", localURL(port),
		"--listen-peer-urls", localURL(peer),
		"--initial-advertise-peer-urls", localURL(peer),
		"--initial-cluster", "default=" + localURL(peer),
		"--log-level", "warn",
	}
	return startProcess(t, "etcd", bin, dataDir, "127.0.0.1:"+strconv.Itoa(port), append(args, extra...))
}

func startProcess(t testing.TB, kind, bin, dataDir, endpoint string, args []string) *Process {
	t.Helper()
	p := &Process{
		t: t, Kind: kind, Bin: bin, Args: args, DataDir: dataDir, Endpoint: endpoint,
		logPath: filepath.Join(t.TempDir(), kind+".log"),
	}
	t.Cleanup(func() {
		dumped := false
		if t.Failed() && kind == "metastore" && p.Running() {
			// What a hung request was waiting on: SIGQUIT makes the
			// server print every goroutine (GOTRACEBACK=all) and exit.
			_ = p.signalAndWait(syscall.SIGQUIT, 30*time.Second)
			dumped = true
		}
		p.Kill()
		if t.Failed() {
			if data, err := os.ReadFile(p.logPath); err == nil {
				t.Logf("%s log (tail):\n%s", kind, tail(string(data), 8000))
				if dumped {
					// The dump is longer than a tail: kept whole, outside
					// t.TempDir, which goes with the test.
					if f, err := os.CreateTemp("", "metastore-failed-*.log"); err == nil {
						_, _ = f.Write(data)
						f.Close()
						t.Logf("%s's goroutine dump and whole log: %s", kind, f.Name())
					}
				}
			}
		}
	})
	p.Restart()
	return p
}

// Restart starts the process again (it must not be running) on the same
// data directory and port, and waits until it serves requests.
func (p *Process) Restart() {
	p.t.Helper()
	p.mu.Lock()
	if p.cmd != nil {
		p.mu.Unlock()
		p.t.Fatalf("%s: Restart while running", p.Kind)
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.mu.Unlock()
		p.t.Fatal(err)
	}
	p.starts++
	fmt.Fprintf(logf, "=== start #%d: %s %v\n", p.starts, p.Bin, p.Args)
	cmd := exec.Command(p.Bin, p.Args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Env = append(os.Environ(), raceEnv, "GOTRACEBACK=all")
	// Die with the test binary even if it is killed (e.g. by -timeout).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		p.mu.Unlock()
		p.t.Fatalf("%s: start: %v", p.Kind, err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited = cmd, exited
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(exited)
	}()
	p.mu.Unlock()
	if err := waitReady(p.Endpoint, 60*time.Second, exited); err != nil {
		p.t.Fatalf("%s (start #%d): %v", p.Kind, p.starts, err)
	}
}

// Kill sends SIGKILL and waits for the process to exit. No-op if not running.
func (p *Process) Kill() {
	p.signalAndWait(syscall.SIGKILL, 30*time.Second)
}

// Stop sends SIGTERM and waits up to 30s for the process to exit, then
// SIGKILLs it. It returns nil for a graceful exit: status 0, or death by the
// SIGTERM itself (etcd re-raises the signal after cleaning up).
func (p *Process) Stop() error {
	return GracefulExit(p.signalAndWait(syscall.SIGTERM, 30*time.Second))
}

// GracefulExit maps a stopped process's wait error to nil when the exit
// was graceful: status 0, or death by the SIGTERM itself (etcd re-raises
// the signal after cleaning up).
func GracefulExit(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM {
			return nil
		}
	}
	return err
}

// signalAndWait signals the process and waits for it to exit, SIGKILLing
// it after timeout (then reporting that). No-op if not running.
func (p *Process) signalAndWait(sig syscall.Signal, timeout time.Duration) error {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	escalated := SignalAndWait(cmd, exited, sig, timeout)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cmd, p.exited = nil, nil
	if escalated {
		return fmt.Errorf("%s did not exit within %v of %v; killed", p.Kind, timeout, sig)
	}
	return p.err
}

// SignalAndWait signals cmd and waits until exited is closed, SIGKILLing
// the process after timeout; it reports whether it had to.
func SignalAndWait(cmd *exec.Cmd, exited <-chan struct{}, sig syscall.Signal, timeout time.Duration) (escalated bool) {
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
		return false
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-exited
		return true
	}
}

// Running reports whether the process has been started and not yet waited for.
func (p *Process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Pid returns the running process' id, or 0 if it is not running.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Log returns the process' combined output so far (all starts).
func (p *Process) Log() string {
	data, _ := os.ReadFile(p.logPath)
	return string(data)
}
