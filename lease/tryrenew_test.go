package lease

import (
	"errors"
	"testing"
	"time"
)

// TestTryRenew: TryRenew renews as Renew does, answers a missing or
// revoked lease at once, and for an expired lease whose revocation is
// pending says it would wait, changing nothing.
func TestTryRenew(t *testing.T) {
	le, c := newManual(t, Config{})
	le.Grant(1, 10)
	c.Advance(8 * time.Second)
	if ttl, done, err := le.TryRenew(1); ttl != 10 || !done || err != nil {
		t.Fatalf("TryRenew(live) = %d, %v, %v", ttl, done, err)
	}
	if info, _ := le.Lookup(1); info.Remaining != 10*time.Second {
		t.Fatalf("remaining after TryRenew %v, want 10s", info.Remaining)
	}
	if _, done, err := le.TryRenew(2); !done || !errors.Is(err, ErrLeaseNotFound) {
		t.Fatalf("TryRenew(missing) = %v, %v", done, err)
	}
	c.Advance(10 * time.Second)
	if ttl, done, err := le.TryRenew(1); done || err != nil || ttl != 0 {
		t.Fatalf("TryRenew(expired, not revoked) = %d, %v, %v; want not done", ttl, done, err)
	}
	if ids := revokeExpired(le); len(ids) != 1 || ids[0] != 1 {
		t.Fatalf("expired %v: TryRenew renewed an expired lease", ids)
	}
	if _, done, err := le.TryRenew(1); !done || !errors.Is(err, ErrLeaseNotFound) {
		t.Fatalf("TryRenew(revoked) = %v, %v", done, err)
	}
}
