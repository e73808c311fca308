package compat

import (
	"strings"
	"testing"

	"github.com/metastore-dev/metastore/tests/framework"
)

// TestMemberNoStrictReconfigCheck: with --strict-reconfig-check=false the
// quorum checks before a membership change are skipped. The part etcd can
// take (a learner and one voting member that never starts) is compared
// with etcd; after that etcd has lost its quorum and would hang on the next
// change, so the rest is metastore's alone, against the same steps with
// the check on: a second voting member that never starts is added (the
// check refuses it), and removing this member, the only one running, is
// still refused with the error the check gives.
func TestMemberNoStrictReconfigCheck(t *testing.T) {
	t.Parallel()
	var logs [][]string
	for _, b := range framework.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			m := newMemberEnv(t, b.Start(t, framework.Options{NoStrictReconfigCheck: true}))
			m.add("L1", true, "http://10.0.0.9:2380")
			m.add("V1", false, "http://10.0.0.8:2380")
			m.list(false)
			logs = append(logs, m.log)
		})
	}
	if len(logs) == 2 {
		t.Run("same-transcript", func(t *testing.T) { compareLines(t, logs[0], logs[1]) })
	}
	if framework.OnlyEtcd() {
		return
	}

	steps := func(m *memberEnv) []string {
		m.add("V1", false, "http://10.0.0.8:2380")
		m.add("V2", false, "http://10.0.0.7:2380")
		m.remove("self")
		m.list(false)
		return m.log
	}
	strict := steps(newMemberEnv(t, framework.MetastoreBackend.Start(t, framework.Options{})))
	loose := steps(newMemberEnv(t, framework.MetastoreBackend.Start(t, framework.Options{NoStrictReconfigCheck: true})))
	find := func(log []string, prefix string) string {
		for _, l := range log {
			if strings.HasPrefix(l, prefix) {
				return l
			}
		}
		t.Fatalf("no %q in %q", prefix, log)
		return ""
	}
	if l := find(strict, "MemberAdd(V2"); !strings.Contains(l, "not enough started members") {
		t.Errorf("strict: %s", l)
	}
	if l := find(loose, "MemberAdd(V2"); strings.Contains(l, "error") {
		t.Errorf("not strict: %s", l)
	}
	// Removing this member is refused as with the check on.
	if a, b := find(strict, "MemberRemove(self)"), find(loose, "MemberRemove(self)"); a != b || !strings.Contains(a, "error") {
		t.Errorf("removing this member: strict %s, not strict %s", a, b)
	}
	t.Logf("strict:\n%s\nnot strict:\n%s", strings.Join(strict, "\n"), strings.Join(loose, "\n"))
}
