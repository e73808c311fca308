package guard

import "testing"

// TestBucketKeepsTokensAcrossSet: a reload that changes a bucket's rate
// neither refills nor empties it; rate 0 removes the limit.
func TestBucketKeepsTokensAcrossSet(t *testing.T) {
	var b bucket
	b.set(1, 2)
	if !b.allow() || !b.allow() || b.allow() {
		t.Fatal("a burst of 2 should allow 2")
	}
	b.set(1, 5) // a bigger bucket, not refilled
	if b.allow() {
		t.Fatal("set refilled the bucket")
	}
	b.set(0, 0)
	for range 100 {
		if !b.allow() {
			t.Fatal("rate 0 must not limit")
		}
	}
}
