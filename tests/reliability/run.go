package reliability

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// RunOptions configure a recorded run.
type RunOptions struct {
	// Clients are the KV stubs of the workload clients, one each (ideally
	// over separate connections).
	Clients []pb.KVClient
	// Control is the controller's own stub for the state reads that cut
	// the history into segments.
	Control pb.KVClient
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
	for i, kv := range opts.Clients {
		clients[i] = &Client{ID: i, KV: kv, History: h, Rand: rand.New(rand.NewPCG(opts.Seed, uint64(i+1))), Timeout: opts.CallTimeout}
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

	init, err := readState(opts.Control)
	if err != nil {
		return nil, fmt.Errorf("initial state: %w", err)
	}
	res := &RunResult{}
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
		call := h.Now()
		end, err := readState(opts.Control)
		if err != nil {
			return res, fmt.Errorf("segment %d: state read: %w", seg, err)
		}
		ret := h.Now()
		ops := h.Take()
		ops = append(ops, porcupine.Operation{ClientId: controller, Input: Input{Kind: OpRangeAll},
			Call: call, Output: Output{Rev: end.Rev, All: end.Keys}, Return: ret})
		res.Segments = append(res.Segments, Segment{Name: fmt.Sprintf("segment-%03d", seg), Init: init, Ops: ops})
		init = end
	}
	for _, c := range clients {
		res.Ops += c.Ops
		res.Unknown += c.Unknown
	}
	return res, nil
}

// readState reads every key and the revision, retrying while the server
// comes back.
func readState(kv pb.KVClient) (State, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := Execute(ctx, kv, Input{Kind: OpRangeAll})
		cancel()
		if err == nil {
			return State{Rev: out.Rev, Keys: out.All}, nil
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
		case in.Kind == OpPut, in.Kind == OpCAS && out.Succeeded:
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
