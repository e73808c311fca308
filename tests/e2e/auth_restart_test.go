package e2e

import (
	"os"
	"testing"

	"github.com/metastore-dev/metastore/tests/framework"
)

// TestAuthSurvivesRestart sets up auth with etcdctl, kills the server with
// SIGKILL, restarts it on the same data directory and checks that users,
// roles, permissions and the auth switch are all still there: on the etcd
// binary first, then on metastore, with identical output.
func TestAuthSurvivesRestart(t *testing.T) {
	t.Parallel()
	root := "--user=root:rootpw"
	alice := "--user=alice:alicepw"
	before := []step{
		s("user", "add", "root", "--new-user-password=rootpw"),
		s("auth", "enable"),
		s(root, "user", "add", "alice:alicepw"),
		s(root, "user", "add", "bob", "--no-password"),
		s(root, "role", "add", "r1"),
		s(root, "role", "grant-permission", "r1", "readwrite", "a/", "--prefix"),
		s(root, "role", "grant-permission", "r1", "read", "k"),
		s(root, "user", "grant-role", "alice", "r1"),
		s(root, "put", "k", "v"),
		s(alice, "put", "a/1", "x"),
		s(root, "auth", "status"),
	}
	after := []step{
		s("get", "k"),
		s(root, "auth", "status").expect("Authentication Status: true\nAuthRevision: 10\n"),
		s(root, "user", "list").expect("alice\nbob\nroot\n"),
		s(root, "user", "get", "alice", "--detail"),
		s(root, "role", "get", "r1"),
		s(alice, "get", "k").expect("k\nv\n"),
		s(alice, "get", "a/", "--prefix").expect("a/1\nx\n"),
		s(alice, "put", "k", "y"),
		s("--user=alice:wrong", "get", "k"),
		s(root, "auth", "disable"),
	}
	var outs [][]ctlResult
	for _, kind := range []string{"etcd", "metastore"} {
		if kind == "metastore" && framework.OnlyEtcd() {
			continue
		}
		var res []ctlResult
		ok := t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			var p *framework.Process
			if kind == "etcd" {
				p = framework.StartEtcdProcess(t, dir, "--bcrypt-cost", "4")
			} else {
				p = framework.StartMetastoreProcess(t, dir, "--bcrypt-cost", "4")
			}
			run := func(steps []step) {
				for _, st := range steps {
					r := framework.Etcdctl(t, p.Endpoint, st.stdin, st.args...)
					cr := ctlResult{stdout: normalizeOutput(r.Stdout, p.Endpoint, nil), stderr: normalizeOutput(r.Stderr, p.Endpoint, nil), code: r.ExitCode}
					res = append(res, cr)
					if os.Getenv("METASTORE_CTL_DUMP") != "" {
						t.Logf("$ etcdctl %s\n[exit %d]\n%s%s", argString(st), cr.code, cr.stdout, stderrBlock(cr.stderr))
					}
					if st.want != nil && cr.stdout != *st.want {
						t.Errorf("etcdctl %s: printed\n%s\nwant\n%s", argString(st), cr.stdout, *st.want)
					}
				}
			}
			run(before)
			p.Kill()
			p.Restart()
			run(after)
		})
		if !ok && kind == "etcd" {
			t.Fatalf("the scenario's expectations do not hold on etcd")
		}
		outs = append(outs, res)
	}
	if len(outs) == 2 {
		steps := append(append([]step{}, before...), after...)
		for i := range steps {
			if i < len(outs[1]) && outs[0][i] != outs[1][i] {
				t.Errorf("etcdctl %s:\n--- etcd (exit %d)\n%s%s\n--- metastore (exit %d)\n%s%s", argString(steps[i]),
					outs[0][i].code, outs[0][i].stdout, stderrBlock(outs[0][i].stderr), outs[1][i].code, outs[1][i].stdout, stderrBlock(outs[1][i].stderr))
			}
		}
	}
}
