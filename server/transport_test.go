package server

import "testing"

// TestInlineOnlyWithoutPolicies: a serializable one-key Range runs on the
// connection's reader only while no policy is loaded (a policy's hook may
// wait for its deadline or a guest's CPU slot, and the reader must not).
func TestInlineOnlyWithoutPolicies(t *testing.T) {
	const path = "/etcdserverpb.KV/Range"
	msg := []byte{0x0a, 0x01, 'k', 0x38, 0x01} // key "k", serializable
	for _, tc := range []struct {
		name     string
		policies bool
	}{{"no policies", false}, {"tenant-isolation", true}} {
		t.Run(tc.name, func(t *testing.T) {
			var s *Server
			if tc.policies {
				s = newBenchServer(t, withTenantIsolation(t))
			} else {
				s = newBenchServer(t)
			}
			if got := s.guard.Policies(); got != tc.policies {
				t.Fatalf("Policies() = %v, want %v", got, tc.policies)
			}
			if got := inlineCall(s.guard.Policies)(path, msg); got == tc.policies {
				t.Fatalf("inline = %v with policies %v", got, tc.policies)
			}
		})
	}
}
