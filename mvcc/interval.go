package mvcc

// intervalTree maps distinct key intervals [start, end) to values and finds
// every interval containing a key (stabbing) in O(log n + matches). An
// interval with inf set has no upper bound (etcd's "from key" watch). It is
// a treap ordered by (start, inf, end), each node augmented with the largest
// end in its subtree. Not safe for concurrent use.
type intervalTree[V any] struct {
	root *ivNode[V]
	seed uint32
	n    int
}

type ivNode[V any] struct {
	start, end string
	inf        bool
	// maxEnd/maxInf: the largest upper bound in this subtree.
	maxEnd      string
	maxInf      bool
	prio        uint32
	left, right *ivNode[V]
	val         V
}

// cmpInterval orders intervals by start, then bounded before unbounded,
// then by end.
func cmpInterval(s1, e1 string, inf1 bool, s2, e2 string, inf2 bool) int {
	switch {
	case s1 < s2:
		return -1
	case s1 > s2:
		return 1
	case inf1 != inf2:
		if inf1 {
			return 1
		}
		return -1
	case inf1 || e1 == e2:
		return 0
	case e1 < e2:
		return -1
	}
	return 1
}

func (n *ivNode[V]) fix() {
	n.maxEnd, n.maxInf = n.end, n.inf
	for _, c := range [2]*ivNode[V]{n.left, n.right} {
		if c != nil && !n.maxInf && (c.maxInf || c.maxEnd > n.maxEnd) {
			n.maxEnd, n.maxInf = c.maxEnd, c.maxInf
		}
	}
}

func (t *intervalTree[V]) nextPrio() uint32 {
	// xorshift32: deterministic, good enough to balance a treap.
	x := t.seed
	if x == 0 {
		x = 0x9e3779b9
	}
	x ^= x << 13
	x ^= x >> 17
	x ^= x << 5
	t.seed = x
	return x
}

// Len returns the number of intervals.
func (t *intervalTree[V]) Len() int { return t.n }

// Get returns the value stored for the interval, if any.
func (t *intervalTree[V]) Get(start, end string, inf bool) (V, bool) {
	n := t.root
	for n != nil {
		switch c := cmpInterval(start, end, inf, n.start, n.end, n.inf); {
		case c < 0:
			n = n.left
		case c > 0:
			n = n.right
		default:
			return n.val, true
		}
	}
	var zero V
	return zero, false
}

// Insert stores val for the interval, replacing any previous value.
func (t *intervalTree[V]) Insert(start, end string, inf bool, val V) {
	if inf {
		end = ""
	}
	var added bool
	t.root = t.insert(t.root, start, end, inf, val, &added)
	if added {
		t.n++
	}
}

func (t *intervalTree[V]) insert(n *ivNode[V], start, end string, inf bool, val V, added *bool) *ivNode[V] {
	if n == nil {
		*added = true
		nn := &ivNode[V]{start: start, end: end, inf: inf, prio: t.nextPrio(), val: val}
		nn.fix()
		return nn
	}
	switch c := cmpInterval(start, end, inf, n.start, n.end, n.inf); {
	case c < 0:
		n.left = t.insert(n.left, start, end, inf, val, added)
		if n.left.prio > n.prio {
			n = rotateRight(n)
		}
	case c > 0:
		n.right = t.insert(n.right, start, end, inf, val, added)
		if n.right.prio > n.prio {
			n = rotateLeft(n)
		}
	default:
		n.val = val
	}
	n.fix()
	return n
}

// Delete removes the interval; it reports whether it was present.
func (t *intervalTree[V]) Delete(start, end string, inf bool) bool {
	if inf {
		end = ""
	}
	var removed bool
	t.root = t.delete(t.root, start, end, inf, &removed)
	if removed {
		t.n--
	}
	return removed
}

func (t *intervalTree[V]) delete(n *ivNode[V], start, end string, inf bool, removed *bool) *ivNode[V] {
	if n == nil {
		return nil
	}
	switch c := cmpInterval(start, end, inf, n.start, n.end, n.inf); {
	case c < 0:
		n.left = t.delete(n.left, start, end, inf, removed)
	case c > 0:
		n.right = t.delete(n.right, start, end, inf, removed)
	default:
		*removed = true
		return merge(n.left, n.right)
	}
	n.fix()
	return n
}

// merge joins two treaps where every interval of a sorts before every one of b.
func merge[V any](a, b *ivNode[V]) *ivNode[V] {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	case a.prio > b.prio:
		a.right = merge(a.right, b)
		a.fix()
		return a
	default:
		b.left = merge(a, b.left)
		b.fix()
		return b
	}
}

func rotateRight[V any](n *ivNode[V]) *ivNode[V] {
	l := n.left
	n.left = l.right
	l.right = n
	n.fix()
	l.fix()
	return l
}

func rotateLeft[V any](n *ivNode[V]) *ivNode[V] {
	r := n.right
	n.right = r.left
	r.left = n
	n.fix()
	r.fix()
	return r
}

// Stab calls f with the value of every interval containing key.
func (t *intervalTree[V]) Stab(key []byte, f func(V)) { stab(t.root, key, f) }

// NB: string(key) in a comparison does not allocate.
func stab[V any](n *ivNode[V], key []byte, f func(V)) {
	for n != nil && (n.maxInf || string(key) < n.maxEnd) {
		stab(n.left, key, f)
		if n.start > string(key) {
			return // the right subtree starts even later
		}
		if n.inf || string(key) < n.end {
			f(n.val)
		}
		n = n.right
	}
}

// Intersects reports whether some interval contains key.
func (t *intervalTree[V]) Intersects(key []byte) bool { return intersects(t.root, key) }

func intersects[V any](n *ivNode[V], key []byte) bool {
	for n != nil && (n.maxInf || string(key) < n.maxEnd) {
		if intersects(n.left, key) {
			return true
		}
		if n.start > string(key) {
			return false
		}
		if n.inf || string(key) < n.end {
			return true
		}
		n = n.right
	}
	return false
}
