package raftnode

import (
	"sync/atomic"
	"time"
)

// The node's watchdog: one goroutine, on a ticker of its own, that expires
// proposals past their request timeout and watches the ready loop and the
// apply goroutine. It shares nothing with those loops but a few atomics:
// a loop that blocks (a write that never returns, a channel nobody drains,
// a lock never released) no longer takes the request timeout with it, and
// the log names the stage it is stuck in (RATIONALE.md, "Request timeouts
// and the loop watchdog live off the ready loop").

// loopStage is what a loop is doing, as the watchdog reports it.
type loopStage uint8

const (
	stageIdle loopStage = iota // waiting for work: never a stall
	// The ready loop's stages.
	stageTick          // raft's tick (raft mutex)
	stageProposals     // stepping queued proposals (raft mutex)
	stageTakeReady     // taking a Ready (raft mutex)
	stageSend          // Transport.Send
	stageSnapshot      // waiting for the apply goroutine to install a snapshot
	stageApplyHandoff  // handing committed entries to the apply goroutine
	stageWaitApplied   // a lone voter waiting for its apply
	stageLogSave       // Log.Save (the Ready's write, its fsync)
	stageTruncate      // log truncation
	stageOnSave        // Config.OnSave
	stageAdvance       // raft's Advance (raft mutex)
	stageCampaign      // a lone voter's election (raft mutex)
	stageReadyTestHook // a test hook
	// The apply goroutine's stages.
	stageApply       // StateMachine.Apply
	stageConfChange  // a membership change
	stageInstallSnap // StateMachine.InstallSnapshot
	stageApplyNotify // answering proposers, notifying waiters
	numStages        // not a stage
)

var stageNames = [numStages]string{
	stageIdle:          "idle",
	stageTick:          "raft tick",
	stageProposals:     "stepping proposals",
	stageTakeReady:     "taking a Ready",
	stageSend:          "transport send",
	stageSnapshot:      "waiting for the snapshot install",
	stageApplyHandoff:  "handing entries to the apply goroutine",
	stageWaitApplied:   "waiting for the local apply",
	stageLogSave:       "log save",
	stageTruncate:      "log truncation",
	stageOnSave:        "save observer",
	stageAdvance:       "raft advance",
	stageCampaign:      "campaign",
	stageReadyTestHook: "test hook",
	stageApply:         "state machine apply",
	stageConfChange:    "membership change",
	stageInstallSnap:   "snapshot install",
	stageApplyNotify:   "answering proposers",
}

func (s loopStage) String() string {
	if s < numStages {
		return stageNames[s]
	}
	return "unknown"
}

// loopProbe is where one loop posts its stage: a sequence number and the
// stage in one atomic word, so that the watchdog sees a loop that moved on
// and came back to the same stage as having moved. Only the loop's own
// goroutine calls enter; it costs one atomic store, no clock read.
type loopProbe struct {
	v   atomic.Uint64
	seq uint64 // the owner's
}

func (p *loopProbe) enter(s loopStage) {
	p.seq++
	p.v.Store(p.seq<<8 | uint64(s))
}

// loopWatch is the watchdog's view of one loop.
type loopWatch struct {
	name  string
	probe *loopProbe

	last     uint64    // the probe's word at the last look
	since    time.Time // when it last changed
	warnedAt time.Time // zero: no warning for this stall yet

	// For Metrics.
	stalled atomic.Int64  // nanoseconds in the current stage while past the threshold, else 0
	stage   atomic.Uint32 // the stage of that stall
	stalls  atomic.Uint64 // stalls warned about
}

// look samples the loop at now and logs a stall past warn.
func (w *loopWatch) look(n *Node, now time.Time, warn time.Duration) {
	cur := w.probe.v.Load()
	stage := loopStage(cur & 0xff)
	if cur != w.last || stage == stageIdle {
		if !w.warnedAt.IsZero() {
			n.lg.Warn(w.name+" moved on", "stage", loopStage(w.last&0xff).String(), "after", now.Sub(w.since).Round(time.Millisecond))
		}
		w.last, w.since, w.warnedAt = cur, now, time.Time{}
		w.stalled.Store(0)
		return
	}
	d := now.Sub(w.since)
	if d < warn {
		return
	}
	w.stalled.Store(int64(d))
	w.stage.Store(uint32(stage))
	if w.warnedAt.IsZero() {
		w.stalls.Add(1)
	} else if now.Sub(w.warnedAt) < warn {
		return
	}
	w.warnedAt = now
	n.lg.Warn(w.name+" is stuck", "stage", stage.String(), "for", d.Round(time.Millisecond),
		"applied", n.applied.Load(), "committed", n.commit.Load(), "pending-proposals", n.wait.pending())
}

// LoopStall is a loop's stall as Metrics reports it.
type LoopStall struct {
	// Stage is where the loop is stuck ("" while it is not).
	Stage string
	// For is how long it has been there (0 while it is not stuck, that
	// is, for less than the warning threshold).
	For time.Duration
	// Stalls counts the stalls warned about since the node started.
	Stalls uint64
}

func (w *loopWatch) metrics() LoopStall {
	st := LoopStall{Stalls: w.stalls.Load()}
	if d := w.stalled.Load(); d > 0 {
		st.For = time.Duration(d)
		st.Stage = loopStage(w.stage.Load()).String()
	}
	return st
}

// watchdog is the node's fourth goroutine: every tick it answers the
// proposers past their deadline and looks at both loops, until they ended.
func (n *Node) watchdog(loopsDone <-chan struct{}) {
	t := time.NewTicker(n.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-loopsDone:
			return
		case now := <-t.C:
			n.wait.expire(now)
			n.readyWatch.look(n, now, n.cfg.stallWarning)
			n.applyWatch.look(n, now, n.cfg.stallWarning)
		}
	}
}
