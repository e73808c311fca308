package e2e

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/metastore-dev/metastore/tests/framework"
)

// runHelp runs bin with args and returns its exit code, stdout and stderr.
func runHelp(t *testing.T, bin string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(cmd.Environ(), "GORACE=atexit_sleep_ms=0")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), stdout.String(), stderr.String()
	}
	t.Fatalf("%s %v: %v", bin, args, err)
	return 0, "", ""
}

// TestHelpExitsZero: asking any command for help prints its usage on
// stdout and exits 0, as etcd (usage on stderr) and etcdctl do (proven on them first); a
// malformed command line still exits non-zero.
func TestHelpExitsZero(t *testing.T) {
	t.Parallel()
	type helpCase struct {
		args []string
		want string // in the usage printed
	}
	// etcd prints its usage on stderr, etcdctl and metastore on stdout.
	check := func(t *testing.T, bin string, onStderr bool, cases []helpCase) {
		for _, c := range cases {
			code, stdout, stderr := runHelp(t, bin, c.args...)
			usage := stdout
			if onStderr {
				usage = stderr
			}
			if code != 0 || !strings.Contains(usage, c.want) {
				t.Errorf("%v: exit %d, want 0 with %q in the usage\nstdout:\n%s\nstderr:\n%s", c.args, code, c.want, stdout, stderr)
			}
		}
	}
	t.Run("etcd", func(t *testing.T) {
		check(t, framework.EtcdBinary(t), true, []helpCase{
			{[]string{"--help"}, "Usage:"},
			{[]string{"-h"}, "Usage:"},
		})
		check(t, framework.EtcdctlBinary(t), false, []helpCase{
			{[]string{"--help"}, "USAGE"},
			{[]string{"version", "--help"}, "version"},
			{[]string{"snapshot", "--help"}, "snapshot"},
			{[]string{"snapshot", "save", "--help"}, "snapshot save"},
			{[]string{"put", "-h"}, "put"},
		})
		if code, _, _ := runHelp(t, framework.EtcdctlBinary(t), "put", "--no-such-flag"); code == 0 {
			t.Errorf("etcdctl with an unknown flag exited 0")
		}
	})
	if framework.OnlyEtcd() {
		return
	}
	t.Run("metastore", func(t *testing.T) {
		bin := framework.MetastoreBinary(t)
		check(t, bin, false, []helpCase{
			{[]string{"--help"}, "Usage:"},
			{[]string{"-h"}, "Usage:"},
			{[]string{"help"}, "Usage:"},
			{[]string{"version", "--help"}, "metastore version"},
			{[]string{"snapshot", "--help"}, "metastore snapshot restore"},
			{[]string{"snapshot", "restore", "--help"}, "metastore snapshot restore"},
			{[]string{"snapshot", "restore", "file.db", "-h"}, "metastore snapshot restore"},
			{[]string{"policy", "--help"}, "metastore policy eval"},
			{[]string{"policy", "eval", "--help"}, "metastore policy eval"},
			{[]string{"policy", "bench", "--help"}, "metastore policy bench"},
			{[]string{"policy", "eval", "-h"}, "metastore policy eval"},
		})
		for _, args := range [][]string{
			{"--no-such-flag"},
			{"version", "extra"},
			{"snapshot", "restore", "--no-such-flag"},
			{"policy", "eval", "--no-such-flag"},
		} {
			if code, _, _ := runHelp(t, bin, args...); code != 2 {
				t.Errorf("%v: exit %d, want 2", args, code)
			}
		}
	})
}
