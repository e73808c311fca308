package auth

import (
	"bytes"
	"slices"

	"go.etcd.io/etcd/api/v3/authpb"

	"github.com/metastore-dev/metastore/internal/policyabi"
)

// Perm is the permission a key range needs: the ABI's permission byte.
type Perm = policyabi.Perm

// interval is [begin, end) over byte strings; a nil end is +infinity.
type interval struct{ begin, end []byte }

// intervalSet is a sorted list of disjoint, non-adjacent intervals: the union
// of a user's grants for one kind of access. It is immutable once built.
type intervalSet []interval

// permSet is a user's effective permissions, precomputed from all of the
// user's roles. Immutable: a change of roles builds a new one.
type permSet struct {
	read, write intervalSet
	// readTree and writeTree decide requests whose end is below their key
	// (see ivTree).
	readTree, writeTree *ivTree
}

// permInterval turns a stored permission into an interval as etcd reads it:
// an empty range end is the single key, "\x00" every key >= key.
func permInterval(p *authpb.Permission) interval {
	switch {
	case len(p.RangeEnd) == 0:
		return interval{p.Key, append(slices.Clip(p.Key), 0)}
	case isOpenEnded(p.RangeEnd):
		return interval{p.Key, nil}
	default:
		return interval{p.Key, p.RangeEnd}
	}
}

func isOpenEnded(end []byte) bool { return len(end) == 1 && end[0] == 0 }

// validPermissionRange reports whether a permission's key range is one etcd
// accepts: a non-empty key and an empty, "\x00" or greater range end.
func validPermissionRange(key, end []byte) bool {
	if len(key) == 0 {
		return false
	}
	return len(end) == 0 || bytes.Compare(key, end) < 0 || isOpenEnded(end)
}

// newPermSet merges the permissions of the given roles.
func newPermSet(roles []*role) *permSet {
	var read, write []interval
	for _, r := range roles {
		for _, p := range r.perms {
			iv := permInterval(p)
			switch p.PermType {
			case authpb.READ:
				read = append(read, iv)
			case authpb.WRITE:
				write = append(write, iv)
			case authpb.READWRITE:
				read = append(read, iv)
				write = append(write, iv)
			}
		}
	}
	// The trees take the intervals in etcd's insertion order, before
	// mergeIntervals sorts them.
	readTree, writeTree := newIvTree(read), newIvTree(write)
	return &permSet{read: mergeIntervals(read), write: mergeIntervals(write), readTree: readTree, writeTree: writeTree}
}

// endLess compares interval ends with nil as +infinity.
func endLess(a, b []byte) bool {
	if a == nil {
		return false
	}
	return b == nil || bytes.Compare(a, b) < 0
}

// mergeIntervals sorts ivs and joins overlapping or touching intervals, so
// that a range is covered by the union iff one merged interval covers it
// (etcd's interval tree treats [a,b) and [b,c) as contiguous too).
func mergeIntervals(ivs []interval) intervalSet {
	if len(ivs) == 0 {
		return nil
	}
	slices.SortFunc(ivs, func(a, b interval) int { return bytes.Compare(a.begin, b.begin) })
	out := intervalSet{ivs[0]}
	for _, iv := range ivs[1:] {
		last := &out[len(out)-1]
		if last.end == nil || bytes.Compare(iv.begin, last.end) <= 0 {
			if endLess(last.end, iv.end) {
				last.end = iv.end
			}
			continue
		}
		out = append(out, iv)
	}
	return slices.Clip(out)
}

// find returns the interval containing key, or nil. No allocation.
func (s intervalSet) find(key []byte) *interval {
	// The last interval whose begin is <= key.
	lo, hi := 0, len(s)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if bytes.Compare(s[m].begin, key) <= 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == 0 {
		return nil
	}
	iv := &s[lo-1]
	if iv.end != nil && bytes.Compare(key, iv.end) >= 0 {
		return nil
	}
	return iv
}

// covers reports whether the set covers a request's key range in etcd's
// wire convention: an empty end is the single key, "\x00" every key >= key.
// As in etcd, an empty key is never covered. (A range whose end is below its
// key is decided by the tree instead, see allows.)
func (s intervalSet) covers(key, end []byte) bool {
	if len(key) == 0 {
		return false
	}
	iv := s.find(key)
	if iv == nil {
		return false
	}
	switch {
	case len(end) == 0:
		return true
	case isOpenEnded(end):
		return iv.end == nil
	default:
		return iv.end == nil || bytes.Compare(end, iv.end) <= 0
	}
}

// allows reports whether the set grants perm on [key, end).
func (p *permSet) allows(perm Perm, key, end []byte) bool {
	if p == nil {
		return false
	}
	set, tree := p.read, p.readTree
	if perm == policyabi.PermWrite {
		set, tree = p.write, p.writeTree
	}
	if len(key) > 0 && len(end) > 0 && !isOpenEnded(end) && bytes.Compare(end, key) < 0 {
		return tree.contains(key, end)
	}
	return set.covers(key, end)
}
