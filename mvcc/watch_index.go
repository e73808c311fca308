package mvcc

// The in-sync watcher index the hub dispatches events through.

// watcherGroup is the set of in-sync watchers with the same key range.
type watcherGroup struct {
	key, end []byte
	ws       []*watcher
}

// watcherIndex finds the in-sync watchers of a key: single-key watchers by
// map, range watchers by interval tree, each entry a group of watchers with
// the same range.
type watcherIndex struct {
	keys   map[string]*watcherGroup
	ranges intervalTree[*watcherGroup]
	n      int
}

func (x *watcherIndex) init() { x.keys = make(map[string]*watcherGroup) }

func (x *watcherIndex) len() int { return x.n }

func (x *watcherIndex) add(w *watcher) {
	var g *watcherGroup
	if w.end == nil {
		g = x.keys[string(w.key)]
		if g == nil {
			g = &watcherGroup{key: w.key}
			x.keys[string(w.key)] = g
		}
	} else {
		inf := len(w.end) == 0
		var ok bool
		if g, ok = x.ranges.Get(string(w.key), string(w.end), inf); !ok {
			g = &watcherGroup{key: w.key, end: w.end}
			x.ranges.Insert(string(w.key), string(w.end), inf, g)
		}
	}
	w.group, w.slot = g, len(g.ws)
	g.ws = append(g.ws, w)
	x.n++
}

func (x *watcherIndex) remove(w *watcher) {
	g := w.group
	last := len(g.ws) - 1
	moved := g.ws[last]
	g.ws[w.slot] = moved
	moved.slot = w.slot
	g.ws[last] = nil
	g.ws = g.ws[:last]
	w.group = nil
	x.n--
	if len(g.ws) > 0 {
		return
	}
	if g.end == nil {
		delete(x.keys, string(g.key))
	} else {
		x.ranges.Delete(string(g.key), string(g.end), len(g.end) == 0)
	}
}

func (x *watcherIndex) each(f func(*watcher)) {
	for _, g := range x.keys {
		for _, w := range g.ws {
			f(w)
		}
	}
	var walk func(n *ivNode[*watcherGroup])
	walk = func(n *ivNode[*watcherGroup]) {
		if n == nil {
			return
		}
		walk(n.left)
		for _, w := range n.val.ws {
			f(w)
		}
		walk(n.right)
	}
	walk(x.ranges.root)
}
