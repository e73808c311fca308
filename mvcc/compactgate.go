package mvcc

import (
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// compactionGate is the store's Pebble compaction scheduler. It grants what
// Pebble's default scheduler grants (as many concurrent compactions as the
// DB allows without permission) but none before the store has opened.
//
// NB: pebble.Open waits for every running compaction before it returns (it
// scans for obsolete files with compactions stopped), and a compaction of
// the LSM left by the previous run started during Open: with 1M keys Open
// took 0.2–1.0 s, against 10 ms with no compaction. Whatever the LSM needs
// then runs once the store serves, like any background compaction.
type compactionGate struct {
	mu       sync.Mutex
	db       pebble.DBForCompaction
	open     bool // granting allowed (set by start)
	closed   bool // Unregister was called
	running  int  // granted compactions not yet Done
	granting bool // a grant round is calling into the DB
	idle     *sync.Cond

	poke  chan struct{} // run a grant round now (cap 1)
	stopc chan struct{}
	donec chan struct{}
}

// gateGrantEvery is how often the gate looks for a waiting compaction
// besides the pokes; flushes raise what the DB allows without telling the
// scheduler (Pebble's default samples at the same period).
const gateGrantEvery = 100 * time.Millisecond

var _ pebble.CompactionScheduler = (*compactionGate)(nil)

func newCompactionGate() *compactionGate {
	g := &compactionGate{poke: make(chan struct{}, 1), stopc: make(chan struct{}), donec: make(chan struct{})}
	g.idle = sync.NewCond(&g.mu)
	return g
}

// Register is called by pebble.Open.
func (g *compactionGate) Register(_ int, db pebble.DBForCompaction) {
	g.db = db
	go g.loop()
}

// Unregister is called by DB.Close; no grant happens after it returns.
func (g *compactionGate) Unregister() {
	close(g.stopc)
	<-g.donec
	g.mu.Lock()
	g.closed = true
	for g.granting {
		g.idle.Wait()
	}
	g.mu.Unlock()
}

// start lets compactions run; the store calls it once Open has returned.
func (g *compactionGate) start() {
	g.mu.Lock()
	g.open = true
	g.mu.Unlock()
	g.wake()
}

// TrySchedule is called by the DB, with its mutex held, when it has a
// compaction to run.
func (g *compactionGate) TrySchedule() (bool, pebble.CompactionGrantHandle) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.open || g.closed || g.running >= g.db.GetAllowedWithoutPermission() {
		return false, nil
	}
	g.running++
	return true, gateGrant{g}
}

// UpdateGetAllowedWithoutPermission is called by the DB when it may allow
// more compactions (after a flush).
func (g *compactionGate) UpdateGetAllowedWithoutPermission() { g.wake() }

func (g *compactionGate) wake() {
	select {
	case g.poke <- struct{}{}:
	default:
	}
}

func (g *compactionGate) loop() {
	defer close(g.donec)
	t := time.NewTicker(gateGrantEvery)
	defer t.Stop()
	for {
		select {
		case <-g.stopc:
			return
		case <-t.C:
		case <-g.poke:
		}
		g.grant()
	}
}

// grant offers the DB as many compactions as it allows and wants. A DB
// whose TrySchedule was refused waits for such an offer rather than asking
// again.
func (g *compactionGate) grant() {
	g.mu.Lock()
	if !g.open || g.closed || g.granting {
		g.mu.Unlock()
		return
	}
	n := g.db.GetAllowedWithoutPermission() - g.running
	if n <= 0 {
		g.mu.Unlock()
		return
	}
	g.granting = true
	g.mu.Unlock()
	// The DB's methods take its mutex, which is ordered before ours.
	for ; n > 0; n-- {
		if waiting, _ := g.db.GetWaitingCompaction(); !waiting {
			break
		}
		if !g.db.Schedule(gateGrant{g}) {
			break
		}
		g.mu.Lock()
		g.running++
		g.mu.Unlock()
	}
	g.mu.Lock()
	g.granting = false
	g.idle.Broadcast()
	g.mu.Unlock()
}

// gateGrant is the handle of one granted compaction.
type gateGrant struct{ g *compactionGate }

func (gateGrant) Started()                                                {}
func (gateGrant) MeasureCPU(pebble.CompactionGoroutineKind)               {}
func (gateGrant) CumulativeStats(stats pebble.CompactionGrantHandleStats) {}

// Done frees the compaction's slot and offers it to the next one.
func (h gateGrant) Done() {
	h.g.mu.Lock()
	h.g.running--
	h.g.mu.Unlock()
	h.g.wake()
}
