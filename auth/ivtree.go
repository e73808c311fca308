package auth

import "bytes"

// ivTree reproduces the shape of etcd's permission interval tree (a
// red-black tree keyed by interval begin, built by inserting a user's
// permissions in etcd's order, with the textbook insertion and fix-up of
// Cormen et al.). It is consulted only for a request range whose end is
// below its key: there etcd's pruned tree walk gives an answer that depends
// on the tree's shape, and metastore answers exactly the same. Every other
// request is decided by the merged intervalSet. Immutable once built.
type ivTree struct {
	nodes []treeNode
	root  int32
}

type treeNode struct {
	iv                  interval
	max                 []byte // largest end in the subtree; nil is +infinity
	left, right, parent int32  // -1 for none
	red                 bool
}

const nilNode int32 = -1

// newIvTree inserts ivs in order.
func newIvTree(ivs []interval) *ivTree {
	if len(ivs) == 0 {
		return nil
	}
	t := &ivTree{nodes: make([]treeNode, 0, len(ivs)), root: nilNode}
	for _, iv := range ivs {
		t.insert(iv)
	}
	t.fixMax(t.root)
	return t
}

func (t *ivTree) n(i int32) *treeNode { return &t.nodes[i] }

func (t *ivTree) isRed(i int32) bool { return i != nilNode && t.nodes[i].red }

func (t *ivTree) insert(iv interval) {
	z := int32(len(t.nodes))
	t.nodes = append(t.nodes, treeNode{iv: iv, left: nilNode, right: nilNode, parent: nilNode, red: true})
	y, x := nilNode, t.root
	for x != nilNode {
		y = x
		if bytes.Compare(iv.begin, t.n(x).iv.begin) < 0 {
			x = t.n(x).left
		} else {
			x = t.n(x).right
		}
	}
	t.n(z).parent = y
	switch {
	case y == nilNode:
		t.root = z
	case bytes.Compare(iv.begin, t.n(y).iv.begin) < 0:
		t.n(y).left = z
	default:
		t.n(y).right = z
	}
	t.insertFixup(z)
}

func (t *ivTree) insertFixup(z int32) {
	for t.isRed(t.n(z).parent) {
		p := t.n(z).parent
		g := t.n(p).parent
		if p == t.n(g).left {
			if u := t.n(g).right; t.isRed(u) {
				t.n(p).red, t.n(u).red, t.n(g).red = false, false, true
				z = g
				continue
			}
			if z == t.n(p).right {
				z = p
				t.rotateLeft(z)
				p = t.n(z).parent
				g = t.n(p).parent
			}
			t.n(p).red, t.n(g).red = false, true
			t.rotateRight(g)
		} else {
			if u := t.n(g).left; t.isRed(u) {
				t.n(p).red, t.n(u).red, t.n(g).red = false, false, true
				z = g
				continue
			}
			if z == t.n(p).left {
				z = p
				t.rotateRight(z)
				p = t.n(z).parent
				g = t.n(p).parent
			}
			t.n(p).red, t.n(g).red = false, true
			t.rotateLeft(g)
		}
	}
	t.n(t.root).red = false
}

// replace puts y where x hangs from x's parent.
func (t *ivTree) replace(x, y int32) {
	p := t.n(x).parent
	t.n(y).parent = p
	switch {
	case p == nilNode:
		t.root = y
	case t.n(p).left == x:
		t.n(p).left = y
	default:
		t.n(p).right = y
	}
}

func (t *ivTree) rotateLeft(x int32) {
	y := t.n(x).right
	t.n(x).right = t.n(y).left
	if l := t.n(y).left; l != nilNode {
		t.n(l).parent = x
	}
	t.replace(x, y)
	t.n(y).left = x
	t.n(x).parent = y
}

func (t *ivTree) rotateRight(x int32) {
	y := t.n(x).left
	t.n(x).left = t.n(y).right
	if r := t.n(y).right; r != nilNode {
		t.n(r).parent = x
	}
	t.replace(x, y)
	t.n(y).right = x
	t.n(x).parent = y
}

// fixMax computes every subtree's largest end.
func (t *ivTree) fixMax(i int32) []byte {
	if i == nilNode {
		return []byte{} // below every end
	}
	nd := t.n(i)
	m := nd.iv.end
	for _, c := range [2][]byte{t.fixMax(nd.left), t.fixMax(nd.right)} {
		if m != nil && (c == nil || bytes.Compare(c, m) > 0) {
			m = c
		}
	}
	nd.max = m
	return m
}

// affineLess compares interval bounds where nil is +infinity.
func affineCompare(a, b []byte) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return 1
	case b == nil:
		return -1
	}
	return bytes.Compare(a, b)
}

// overlapCmp is etcd's interval comparison of a against b: -1 when a lies
// left of b, +1 when a starts at or after b's end, 0 otherwise.
func overlapCmp(aBegin, aEnd, bBegin, bEnd []byte) int {
	if affineCompare(aBegin, bBegin) < 0 && affineCompare(aEnd, bBegin) <= 0 {
		return -1
	}
	if affineCompare(aBegin, bEnd) >= 0 {
		return 1
	}
	return 0
}

// containsWalk is the state of etcd's Contains walk.
type containsWalk struct {
	begin, end     []byte // the query; nil end is +infinity
	seen, gap      bool
	minBegin, maxE []byte
}

// contains answers as etcd's interval tree Contains does for [begin, end):
// the tree nodes its pruned walk visits must cover the query without a gap.
func (t *ivTree) contains(begin, end []byte) bool {
	if t == nil {
		return false
	}
	w := containsWalk{begin: begin, end: end}
	t.walk(t.root, &w)
	return w.seen && !w.gap && affineCompare(w.maxE, end) >= 0 && bytes.Compare(w.minBegin, begin) <= 0
}

// walk visits, in begin order, the nodes etcd's walk would visit; it
// returns false to stop.
func (t *ivTree) walk(i int32, w *containsWalk) bool {
	if i == nilNode {
		return true
	}
	nd := t.n(i)
	switch overlapCmp(w.begin, w.end, nd.iv.begin, nd.iv.end) {
	case -1:
		return t.walk(nd.left, w)
	case 1:
		if overlapCmp(nd.iv.begin, nd.max, w.begin, w.end) == 0 {
			return t.walk(nd.left, w) && t.walk(nd.right, w)
		}
		return true
	}
	if !t.walk(nd.left, w) {
		return false
	}
	if !w.seen {
		w.seen, w.minBegin, w.maxE = true, nd.iv.begin, nd.iv.end
	} else {
		if affineCompare(w.maxE, nd.iv.begin) < 0 {
			w.gap = true
			return false
		}
		if affineCompare(nd.iv.end, w.maxE) > 0 {
			w.maxE = nd.iv.end
		}
	}
	return t.walk(nd.right, w)
}
