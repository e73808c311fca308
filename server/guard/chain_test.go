package guard

import (
	"testing"

	"github.com/metastore-dev/metastore/server/config"
)

// BenchmarkAcquireChain is what holding a policy generation costs a
// request.
func BenchmarkAcquireChain(b *testing.B) {
	s := &Guard{}
	s.chain.Store(&policyChain{loaded: []*loadedPolicy{{}}})
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c, stripe := s.acquireChain()
			c.release(stripe)
		}
	})
}

// TestChainRetireWaitsForHolders: a replaced generation's modules are
// closed only when the last request holding it releases it, and a request
// that acquires after the swap gets the new generation.
func TestChainRetireWaitsForHolders(t *testing.T) {
	s := &Guard{}
	old := &policyChain{loaded: []*loadedPolicy{{}}}
	s.chain.Store(old)
	var holds [3]uint32
	for i := range holds {
		c, stripe := s.acquireChain()
		if c != old {
			t.Fatal("acquired another generation")
		}
		holds[i] = stripe
	}
	next := &policyChain{loaded: []*loadedPolicy{{}}}
	s.chain.Store(next)
	closed := 0
	old.retire(func() { closed++ })
	if c, stripe := s.acquireChain(); c != next {
		t.Fatal("a request after the swap got the old generation")
	} else {
		c.release(stripe)
	}
	for i, stripe := range holds {
		if closed != 0 {
			t.Fatalf("closed with %d holders left", len(holds)-i)
		}
		old.release(stripe)
	}
	if closed != 1 {
		t.Fatalf("closed %d times after the last release, want once", closed)
	}
	// A generation nobody holds is closed at once.
	idle := &policyChain{loaded: []*loadedPolicy{{}}}
	n := 0
	idle.retire(func() { n++ })
	if n != 1 {
		t.Fatal("an unheld generation was not closed at retire")
	}
}

// TestRestartOnly: a reload tells settings it applies from those that take
// a restart.
func TestRestartOnly(t *testing.T) {
	running := config.Default()
	next := config.Default()
	next.Policies = []config.Policy{{Name: "p"}}
	next.Tenants = []config.Tenant{{Name: "t"}}
	next.Authorization.Chain = []string{"rbac"}
	next.PolicyConfig, next.ConfigFile = "/etc/p.yaml", "/etc/m.yaml"
	if len(config.RestartRequired(running, next)) > 0 {
		t.Error("policies, tenants and the chain are reloaded")
	}
	next.Limits.MaxTxnOps++
	if len(config.RestartRequired(running, next)) == 0 {
		t.Error("a changed limit takes a restart")
	}
}
