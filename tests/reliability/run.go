package reliability

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// RunOptions configure a recorded run.
type RunOptions struct {
	// Clients are the stubs of the workload clients, one each (ideally
	// over separate connections).
	Clients []Conn
	// Control is the controller's own stubs for the state reads that cut
	// the history into segments.
	Control Conn
	// Watchers, if set, are groups of watchers, each group on one stream
	// of WatchClients[i % len], recorded from the run's first revision to
	// its last and checked against the committed history.
	Watchers     [][]WatchSpec
	WatchClients []pb.WatchClient
	// ProgressEvery is how often each watch stream sends a
	// RequestProgress. Default 100ms.
	ProgressEvery time.Duration
	// Segments is how many quiescent cuts the run makes.
	Segments int
	// SegmentTime is the longest time clients run in one segment; each
	// segment runs a random time between half of it and all of it.
	SegmentTime time.Duration
	// Interrupt, if set, runs at the end of each segment right after the
	// gate closes, while the clients' last calls are still in flight (e.g.
	// SIGKILL the server).
	Interrupt func(segment int) error
	// Resume, if set, runs once every client is parked after Interrupt
	// (e.g. restart the server).
	Resume func(segment int) error
	// AfterSegment, if set, runs after each segment's closing state read,
	// with every segment so far (e.g. verify what was acknowledged).
	AfterSegment func(segs []Segment) error
	// Seed makes the operation mix and timings reproducible (the
	// interleaving is still up to the scheduler).
	Seed uint64
	// CallTimeout bounds each client call. Default 5s.
	CallTimeout time.Duration
}

// RunResult is a recorded run, cut into segments.
type RunResult struct {
	Segments []Segment
	Ops      int // client operations recorded (failed reads excluded)
	Unknown  int // client calls that failed (unknown outcome)

	// With RunOptions.Watchers: what each watcher received, the committed
	// history read back from the store's revisions, and the revision every
	// watcher reached.
	Watches      []WatchRecording
	Committed    *Committed
	WatchThrough int64
	WatchStreams int // streams opened, re-creations after crashes included
	Progress     int // progress notifications recorded
}

// Run drives the clients through opts.Segments segments and returns the
// recorded history. Each segment begins and ends with a read of every key
// made while no client call is in flight, so it can be checked on its own
// from the state the previous one ended in: porcupine's cost then grows
// with the length of a run, not exponentially in it.
func Run(opts RunOptions) (*RunResult, error) {
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 5 * time.Second
	}
	rnd := rand.New(rand.NewPCG(opts.Seed, 0x5eed))
	h := NewHistory()
	gate := NewGate()
	clients := make([]*Client, len(opts.Clients))
	var wg sync.WaitGroup
	for i, conn := range opts.Clients {
		clients[i] = &Client{ID: i, Conn: conn, History: h, Rand: rand.New(rand.NewPCG(opts.Seed, uint64(i+1))), Timeout: opts.CallTimeout}
		wg.Add(1)
		go func(c *Client) {
			defer wg.Done()
			c.Run(gate)
		}(clients[i])
	}
	defer func() {
		gate.Stop()
		wg.Wait()
	}()
	controller := len(opts.Clients) // porcupine client id of the state reads

	known := map[int64]bool{NeverGranted: true}
	for i := 0; i < LeasePool; i++ {
		known[LeasePoolBase+int64(i)] = true
	}
	init, err := readState(opts.Control, known)
	if err != nil {
		return nil, fmt.Errorf("initial state: %w", err)
	}
	res := &RunResult{}
	var watches *WatchRecorder
	if len(opts.Watchers) > 0 {
		if opts.ProgressEvery <= 0 {
			opts.ProgressEvery = 100 * time.Millisecond
		}
		watches = StartWatchers(opts.WatchClients, opts.Watchers, init.Rev+1, opts.ProgressEvery)
		defer func() {
			if watches != nil {
				watches.Finish(0, 0)
			}
		}()
	}
	first := init.Rev
	for seg := 0; seg < opts.Segments; seg++ {
		gate.Open()
		half := opts.SegmentTime / 2
		time.Sleep(half + time.Duration(rnd.Int64N(int64(half)+1)))
		gate.Close()
		if opts.Interrupt != nil {
			if err := opts.Interrupt(seg); err != nil {
				return res, fmt.Errorf("segment %d: %w", seg, err)
			}
		}
		gate.WaitParked(len(clients))
		if opts.Resume != nil {
			if err := opts.Resume(seg); err != nil {
				return res, fmt.Errorf("segment %d: %w", seg, err)
			}
		}
		ops := h.Take()
		for _, op := range ops {
			if out := op.Output.(Output); op.Input.(Input).Kind == OpGrant && !out.Unknown && out.Err == "" {
				known[out.Lease] = true
			}
		}
		call := h.Now()
		end, err := readState(opts.Control, known)
		if err != nil {
			return res, fmt.Errorf("segment %d: state read: %w", seg, err)
		}
		ret := h.Now()
		ops = append(ops, porcupine.Operation{ClientId: controller, Input: Input{Kind: OpState},
			Call: call, Output: Output{Rev: end.Rev, All: end.Keys, Leases: end.Leases}, Return: ret})
		res.Segments = append(res.Segments, Segment{Name: fmt.Sprintf("segment-%03d", seg), Init: init, Ops: ops})
		init = end
		if opts.AfterSegment != nil {
			if err := opts.AfterSegment(res.Segments); err != nil {
				return res, fmt.Errorf("after segment %d: %w", seg, err)
			}
		}
	}
	for _, c := range clients {
		res.Ops += c.Ops
		res.Unknown += c.Unknown
	}
	if watches != nil {
		w := watches
		watches = nil
		res.Watches, err = w.Finish(init.Rev, time.Minute)
		res.WatchStreams, res.Progress = w.Stats()
		if err != nil {
			return res, err
		}
		res.WatchThrough = init.Rev
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		if res.Committed, err = ReadCommitted(ctx, opts.Control.KV, first+1, init.Rev); err != nil {
			return res, fmt.Errorf("read the committed history: %w", err)
		}
	}
	return res, nil
}

// readState reads every key, the lease list and the revision, retrying
// while the server comes back. Leases not in known (if not nil) (granted by a call whose
// outcome is unknown, under an id nobody learned) are left out: no client
// can name them.
func readState(c Conn, known map[int64]bool) (State, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := Execute(ctx, c, Input{Kind: OpState})
		cancel()
		if err == nil && out.Err != "" {
			err = fmt.Errorf("state read: %s", out.Err)
		}
		if err == nil {
			s := State{Rev: out.Rev, Keys: out.All, Leases: out.Leases}
			if known == nil {
				return s, nil
			}
			ids := slices.DeleteFunc(s.LeaseIDs(), func(id int64) bool { return !known[id] })
			return s.withLeases(ids), nil
		}
		if time.Now().After(deadline) {
			return State{}, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// AckedWrite is one key written by an acknowledged operation.
type AckedWrite struct {
	Key   int
	Value string
	Rev   int64
}

// AckedWrites lists every key write the server acknowledged in ops.
func AckedWrites(ops []porcupine.Operation) []AckedWrite {
	var ws []AckedWrite
	for _, op := range ops {
		in, out := op.Input.(Input), op.Output.(Output)
		if out.Unknown {
			continue
		}
		switch {
		case out.Err != "":
		case in.Kind == OpPut, in.Kind == OpLeasePut, in.Kind == OpCAS && out.Succeeded:
			ws = append(ws, AckedWrite{in.Key, in.Value, out.Rev})
		case in.Kind == OpMultiPut:
			ws = append(ws, AckedWrite{in.Key, in.Value, out.Rev}, AckedWrite{in.Key2, in.Value, out.Rev})
		}
	}
	return ws
}

// VerifyAcked reads each write at the revision it was acknowledged with and
// reports every one that is not there with that value and mod_revision.
func VerifyAcked(ctx context.Context, kv pb.KVClient, ws []AckedWrite) error {
	var lost []string
	for _, w := range ws {
		r, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte(KeyName(w.Key)), Revision: w.Rev}, waitReady)
		if err != nil {
			return fmt.Errorf("read %s at %d: %w", KeyName(w.Key), w.Rev, err)
		}
		if len(r.Kvs) != 1 || string(r.Kvs[0].Value) != w.Value || r.Kvs[0].ModRevision != w.Rev {
			lost = append(lost, fmt.Sprintf("%s=%q@%d (read %v)", KeyName(w.Key), w.Value, w.Rev, r.Kvs))
		}
	}
	if len(lost) > 0 {
		return fmt.Errorf("%d acknowledged writes lost: %v", len(lost), lost)
	}
	return nil
}

// LeaseCheck says what VerifyLeases checked.
type LeaseCheck struct {
	Alive, Revoked int // leases checked to exist, and to be gone with their keys
}

// VerifyLeases checks the leases at the end of a run against what the
// server acknowledged: a lease whose grant was acknowledged and that no
// later revoke may have removed exists, with its granted TTL and a
// remaining TTL in (0, granted+RestartTTLSlack]; a lease whose revoke was acknowledged and
// that no later grant may have re-created does not exist, and no key is
// attached to it.
//
// Only leases whose newest acknowledged grant or revoke was called at or
// after since are checked (0: all), so that checking after every segment
// costs the segment's leases, not the run's.
func VerifyLeases(ctx context.Context, c Conn, segs []Segment, since int64) (LeaseCheck, error) {
	var ops []porcupine.Operation
	for _, s := range segs {
		ops = append(ops, s.Ops...)
	}
	type mark struct {
		grant, revoke int64 // Call of the newest acknowledged grant/revoke, -1 if none
	}
	marks := map[int64]*mark{}
	get := func(id int64) *mark {
		if marks[id] == nil {
			marks[id] = &mark{-1, -1}
		}
		return marks[id]
	}
	for _, op := range ops {
		in, out := op.Input.(Input), op.Output.(Output)
		if out.Unknown || out.Err != "" {
			continue
		}
		switch in.Kind {
		case OpGrant:
			m := get(out.Lease)
			m.grant = max(m.grant, op.Call)
		case OpRevoke:
			m := get(in.Lease)
			m.revoke = max(m.revoke, op.Call)
		}
	}
	// attempted reports whether a call of kind on id that may have taken
	// effect overlaps or follows time t.
	attempted := func(kind OpKind, id, t int64) bool {
		for _, op := range ops {
			in, out := op.Input.(Input), op.Output.(Output)
			if in.Kind == kind && in.Lease == id && op.Return > t && out.Err == "" {
				return true
			}
		}
		return false
	}
	state, err := readState(c, nil)
	if err != nil {
		return LeaseCheck{}, err
	}
	var res LeaseCheck
	var problems []string
	for id, m := range marks {
		if max(m.grant, m.revoke) < since {
			continue
		}
		switch {
		case m.grant > m.revoke && !attempted(OpRevoke, id, m.grant):
			out, err := Execute(ctx, c, Input{Kind: OpTimeToLive, Lease: id})
			if err != nil {
				return res, err
			}
			if out.GrantedTTL != LeaseTTL || out.TTL <= 0 || out.TTL > LeaseTTL+RestartTTLSlack {
				problems = append(problems, fmt.Sprintf("lease %x: acknowledged grant, TTL %d/%d now", id, out.TTL, out.GrantedTTL))
			}
			res.Alive++
		case m.revoke > m.grant && !attempted(OpGrant, id, m.revoke):
			out, err := Execute(ctx, c, Input{Kind: OpTimeToLive, Lease: id})
			if err != nil {
				return res, err
			}
			if out.TTL != -1 {
				problems = append(problems, fmt.Sprintf("lease %x: acknowledged revoke, TTL %d/%d now", id, out.TTL, out.GrantedTTL))
			}
			for k, kv := range state.Keys {
				if kv.Version > 0 && kv.Lease == id {
					problems = append(problems, fmt.Sprintf("lease %x: acknowledged revoke, but %s is still attached to it", id, KeyName(k)))
				}
			}
			res.Revoked++
		}
	}
	if len(problems) > 0 {
		return res, fmt.Errorf("%d lease problems: %v", len(problems), problems)
	}
	return res, nil
}
