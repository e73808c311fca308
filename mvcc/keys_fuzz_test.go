package mvcc

import (
	"bytes"
	"testing"
)

// FuzzKeyEncoding checks the key layout's promises for arbitrary user keys
// and revisions: a version key decodes back to its user key and revision;
// encoded user keys sort exactly as the raw keys; every version of a key
// lies between the key's prefix and its next-key bound, and no other key's
// versions do; newer revisions sort first. Decoding arbitrary bytes never
// panics.
func FuzzKeyEncoding(f *testing.F) {
	f.Add([]byte("a"), []byte("b"), int64(1), int64(2))
	f.Add([]byte("a"), []byte("a\x00"), int64(5), int64(5))
	f.Add([]byte("\x00"), []byte("\x00\x00"), int64(1), int64(1<<40))
	f.Add([]byte("a\x00\x01"), []byte("a\x00\xff"), int64(7), int64(3))
	f.Add([]byte("\xff\xff"), []byte{}, int64(1<<62), int64(0))
	f.Add([]byte("k\x00"), []byte("k\x01"), int64(2), int64(9))
	f.Fuzz(func(t *testing.T, a, b []byte, ra, rb int64) {
		if ra < 0 {
			ra = -ra
		}
		if rb < 0 {
			rb = -rb
		}
		ka := appendVersionKey(nil, a, ra)
		kb := appendVersionKey(nil, b, rb)
		for _, c := range []struct {
			raw []byte
			rev int64
			k   []byte
		}{{a, ra, ka}, {b, rb, kb}} {
			got, err := decodeUserKey(c.k)
			if err != nil || !bytes.Equal(got, c.raw) {
				t.Fatalf("decodeUserKey(%x) = %x, %v; want %x", c.k, got, err, c.raw)
			}
			if r := versionKeyRev(c.k); r != c.rev {
				t.Fatalf("versionKeyRev = %d, want %d", r, c.rev)
			}
			p := versionKeyPrefix(c.k)
			if !bytes.Equal(p, appendUserKey(nil, c.raw)) {
				t.Fatalf("prefix of %x is %x", c.k, p)
			}
		}
		// User-key order is preserved, and versions of different keys never
		// interleave.
		ua, ub := appendUserKey(nil, a), appendUserKey(nil, b)
		if got, want := bytes.Compare(ua, ub), bytes.Compare(a, b); got != want {
			t.Fatalf("order of %x, %x encoded: %d, raw: %d", a, b, got, want)
		}
		if !bytes.Equal(a, b) {
			lo, hi, kOther := ua, nextUserKeyBound(nil, ua), kb
			if in := bytes.Compare(lo, kOther) <= 0 && bytes.Compare(kOther, hi) < 0; in {
				t.Fatalf("version of %x falls within the versions of %x", b, a)
			}
			if bytes.HasPrefix(ub, ua) || bytes.HasPrefix(ua, ub) {
				t.Fatalf("encoded key of %x is a prefix of that of %x (or the reverse)", a, b)
			}
		} else if ra != rb {
			// Same key: the newer revision sorts first.
			if (ra > rb) != (bytes.Compare(ka, kb) < 0) {
				t.Fatalf("revisions %d and %d of %x sort the wrong way", ra, rb, a)
			}
		}
		// Range bounds cover exactly the keys in [a, b).
		var sc scratch
		lower, upper := sc.rangeBounds(a, b)
		inRange := bytes.Compare(lower, ka) <= 0 && bytes.Compare(ka, upper) < 0
		if want := bytes.Compare(a, b) < 0; len(b) > 0 && inRange != want {
			t.Fatalf("version of %x within rangeBounds(%x, %x) = %v, want %v", a, a, b, inRange, want)
		}
		// Single-key bounds cover every version of a and no other key's,
		// and leave the previous bounds intact (Pebble may compare them).
		kl, ku := sc.keyBounds(a)
		if !(bytes.Compare(kl, ka) <= 0 && bytes.Compare(ka, ku) < 0) {
			t.Fatalf("version of %x outside its own key bounds", a)
		}
		if in := bytes.Compare(kl, kb) <= 0 && bytes.Compare(kb, ku) < 0; in != bytes.Equal(a, b) {
			t.Fatalf("version of %x within the key bounds of %x = %v", b, a, in)
		}
		if l2, u2 := (&scratch{}).rangeBounds(a, b); !bytes.Equal(l2, lower) || !bytes.Equal(u2, upper) {
			t.Fatalf("rangeBounds(%x, %x) overwritten by the next call", a, b)
		}
		// The comparer's Split cuts exactly the revision off a version key
		// and leaves every other key whole: a bare prefix, a next-key bound,
		// range bounds, and keys of the other keyspaces.
		if n := splitVersionKey(ka); n != len(ua) {
			t.Fatalf("splitVersionKey(%x) = %d, want %d", ka, n, len(ua))
		}
		for _, k := range [][]byte{ua, nextUserKeyBound(nil, ua), lower, upper, appendLogKey(nil, ra, int(uint32(rb))), appendAttachKey(nil, ra, a)} {
			if n := splitVersionKey(k); n != len(k) {
				t.Fatalf("splitVersionKey(%x) = %d on a key that is no version key", k, n)
			}
		}
		// Pebble's order must agree with prefixes-then-suffixes for every
		// key it meets: version keys, bounds, garbage, and the separators
		// and successors it shortens index keys to.
		keys := [][]byte{ka, kb, ua, ub, lower, upper, append([]byte{prefixKey}, a...), append([]byte{prefixKey}, b...)}
		keys = append(keys, comparer.Separator(nil, ka, kb), comparer.Successor(nil, ka), comparer.Separator(nil, ua, kb), comparer.Successor(nil, ua))
		for _, x := range keys {
			for _, y := range keys {
				if got, want := splitCompare(x, y), bytes.Compare(x, y); got != want {
					t.Fatalf("split order of %x and %x is %d, byte order %d", x, y, got, want)
				}
			}
		}
		// Garbage never panics the decoders.
		_ = splitVersionKey(a)
		_, _ = decodeUserKey(a)
		_, _ = decodeVersionValue(b)
		// Version values round-trip.
		sub := int(uint32(ra))
		v := appendVersionValue(nil, sub, ra, rb, ra-rb, a)
		rec, err := decodeVersionValue(v)
		if err != nil || rec.tombstone || rec.sub != int64(sub) || rec.create != ra || rec.version != rb || rec.lease != ra-rb || !bytes.Equal(rec.value, a) {
			t.Fatalf("version value round trip: %+v, %v", rec, err)
		}
		if rec, err := decodeVersionValue(appendTombstoneValue(nil, sub)); err != nil || !rec.tombstone || rec.sub != int64(sub) {
			t.Fatalf("tombstone round trip: %+v, %v", rec, err)
		}
		// Change-log keys order by revision, then sub-revision.
		la, lb := appendLogKey(nil, ra, int(uint32(rb))), appendLogKey(nil, rb, int(uint32(ra)))
		if logKeyRev(la) != ra || logKeyRev(lb) != rb {
			t.Fatalf("log key revisions do not round-trip")
		}
		if ra < rb && bytes.Compare(la, lb) >= 0 {
			t.Fatalf("log key of %d sorts after that of %d", ra, rb)
		}
	})
}

// splitCompare orders keys as Pebble checks a comparer against its Split:
// prefixes byte-wise, then suffixes.
func splitCompare(a, b []byte) int {
	pa, pb := splitVersionKey(a), splitVersionKey(b)
	if c := bytes.Compare(a[:pa], b[:pb]); c != 0 {
		return c
	}
	return bytes.Compare(a[pa:], b[pb:])
}

// TestComparerSplitOrder: the shortened index key Pebble made in a store
// with version keys of "crash/w6/k3" (a version prefix and seven 0xff
// bytes) orders the same by prefixes-then-suffixes as byte-wise; a Split
// that recognized only whole revisions failed Pebble's invariant check.
func TestComparerSplitOrder(t *testing.T) {
	v := appendVersionKey(nil, []byte("crash/w6/k3"), 43)
	sep := append(appendUserKey(nil, []byte("crash/w6/k3")), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	keys := [][]byte{v, sep, appendUserKey(nil, []byte("crash/w6/k3")), appendVersionKey(nil, []byte("crash/w6/k30"), 7),
		comparer.Separator(nil, v, appendVersionKey(nil, []byte("crash/w6/k4"), 1)), comparer.Successor(nil, v), {prefixKey}, {prefixKey, 0, 1}, {}}
	for _, x := range keys {
		for _, y := range keys {
			if got, want := splitCompare(x, y), bytes.Compare(x, y); got != want {
				t.Errorf("split order of %x and %x is %d, byte order %d", x, y, got, want)
			}
		}
	}
}
