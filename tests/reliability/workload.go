package reliability

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc"
)

// Gate lets the controller stop every client at a quiescent point: a
// closed gate parks each client before its next call, and Parked reports
// when all of them are parked (so no call is in flight).
type Gate struct {
	mu      sync.Mutex
	cond    *sync.Cond
	open    bool
	parked  int
	stopped bool
}

// NewGate returns a closed gate.
func NewGate() *Gate {
	g := &Gate{}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// Open lets clients run.
func (g *Gate) Open() {
	g.mu.Lock()
	g.open = true
	g.cond.Broadcast()
	g.mu.Unlock()
}

// Close makes clients park before their next call.
func (g *Gate) Close() {
	g.mu.Lock()
	g.open = false
	g.mu.Unlock()
}

// Stop releases every client for good: Pass returns false from now on.
func (g *Gate) Stop() {
	g.mu.Lock()
	g.stopped = true
	g.cond.Broadcast()
	g.mu.Unlock()
}

// WaitParked waits until n clients are parked.
func (g *Gate) WaitParked(n int) {
	g.mu.Lock()
	for g.parked < n {
		g.cond.Wait()
	}
	g.mu.Unlock()
}

// Pass blocks while the gate is closed; false means stop.
func (g *Gate) Pass() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.open && !g.stopped {
		g.parked++
		g.cond.Broadcast()
		for !g.open && !g.stopped {
			g.cond.Wait()
		}
		g.parked--
	}
	return !g.stopped
}

// Client is one workload client: it issues random operations on the
// workload's keys and records them.
type Client struct {
	ID      int
	KV      pb.KVClient
	History *History
	Rand    *rand.Rand
	// Timeout bounds each call.
	Timeout time.Duration

	seq     int
	lastMod [NumKeys]int64 // newest mod_revision this client saw per key
	// Stats.
	Ops, Unknown int
}

// Run issues operations until the gate stops it.
func (c *Client) Run(g *Gate) {
	for g.Pass() {
		c.Step()
	}
}

// Step issues one random operation and records it.
func (c *Client) Step() {
	in := c.next()
	call := c.History.Now()
	out := c.Do(in)
	ret := c.History.Now()
	c.History.Add(c.ID, in, call, out, ret)
	c.Ops++
	if out.Unknown {
		c.Unknown++
	}
}

func (c *Client) next() Input {
	c.seq++
	in := Input{Key: c.Rand.IntN(NumKeys), Value: fmt.Sprintf("c%d-%d", c.ID, c.seq)}
	switch p := c.Rand.IntN(100); {
	case p < 22:
		in.Kind = OpGet
	case p < 30:
		in.Kind = OpRangeAll
	case p < 50:
		in.Kind = OpPut
	case p < 60:
		in.Kind = OpDelete
	case p < 88:
		in.Kind = OpCAS
		in.ExpectMod = c.lastMod[in.Key]
	default:
		in.Kind = OpMultiPut
		in.Key2 = (in.Key + 1 + c.Rand.IntN(NumKeys-1)) % NumKeys
	}
	return in
}

// Do executes in against the server. Any error makes the outcome unknown.
func (c *Client) Do(in Input) Output {
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	out, err := Execute(ctx, c.KV, in)
	if err != nil {
		return Output{Unknown: true}
	}
	switch in.Kind {
	case OpGet:
		c.lastMod[in.Key] = out.KV.Mod
	case OpPut:
		c.lastMod[in.Key] = out.Rev
	case OpDelete:
		c.lastMod[in.Key] = 0 // absent keys compare as mod_revision 0
	case OpRangeAll:
		for i, kv := range out.All {
			c.lastMod[i] = kv.Mod
		}
	case OpCAS:
		if out.Succeeded {
			c.lastMod[in.Key] = out.Rev
		} else {
			c.lastMod[in.Key] = out.KV.Mod
		}
	case OpMultiPut:
		c.lastMod[in.Key], c.lastMod[in.Key2] = out.Rev, out.Rev
	}
	return out
}

// waitReady makes calls queue while the connection is re-established
// after a restart instead of failing at once.
var waitReady = grpc.WaitForReady(true)

// Execute sends one operation and converts the response.
func Execute(ctx context.Context, kv pb.KVClient, in Input) (Output, error) {
	key := []byte(KeyName(in.Key))
	switch in.Kind {
	case OpGet:
		r, err := kv.Range(ctx, &pb.RangeRequest{Key: key}, waitReady)
		if err != nil {
			return Output{}, err
		}
		out := Output{Rev: r.Header.Revision}
		if len(r.Kvs) == 1 {
			out.KV = toKV(r.Kvs[0])
		}
		return out, nil
	case OpRangeAll:
		r, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte(KeyPrefix), RangeEnd: []byte(KeyPrefixEnd)}, waitReady)
		if err != nil {
			return Output{}, err
		}
		out := Output{Rev: r.Header.Revision}
		for _, x := range r.Kvs {
			i, ok := keyIndex(string(x.Key))
			if !ok {
				return Output{}, fmt.Errorf("unexpected key %q", x.Key)
			}
			out.All[i] = toKV(x)
		}
		return out, nil
	case OpPut:
		r, err := kv.Put(ctx, &pb.PutRequest{Key: key, Value: []byte(in.Value), PrevKv: true}, waitReady)
		if err != nil {
			return Output{}, err
		}
		out := Output{Rev: r.Header.Revision}
		if r.PrevKv != nil {
			out.KV = toKV(r.PrevKv)
		}
		return out, nil
	case OpDelete:
		r, err := kv.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: key, PrevKv: true}, waitReady)
		if err != nil {
			return Output{}, err
		}
		out := Output{Rev: r.Header.Revision, Deleted: r.Deleted}
		if len(r.PrevKvs) == 1 {
			out.KV = toKV(r.PrevKvs[0])
		}
		return out, nil
	case OpCAS:
		r, err := kv.Txn(ctx, &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: key, Target: pb.Compare_MOD, Result: pb.Compare_EQUAL,
				TargetUnion: &pb.Compare_ModRevision{ModRevision: in.ExpectMod}}},
			Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: key, Value: []byte(in.Value)}}}},
			Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: key}}}},
		}, waitReady)
		if err != nil {
			return Output{}, err
		}
		out := Output{Rev: r.Header.Revision, Succeeded: r.Succeeded}
		if !r.Succeeded {
			if len(r.Responses) != 1 || r.Responses[0].GetResponseRange() == nil {
				return Output{}, fmt.Errorf("cas: failure branch answered %v", r.Responses)
			}
			if kvs := r.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
				out.KV = toKV(kvs[0])
			}
		}
		return out, nil
	case OpMultiPut:
		r, err := kv.Txn(ctx, &pb.TxnRequest{
			Success: []*pb.RequestOp{
				{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: key, Value: []byte(in.Value)}}},
				{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(KeyName(in.Key2)), Value: []byte(in.Value)}}},
			},
		}, waitReady)
		if err != nil {
			return Output{}, err
		}
		if !r.Succeeded {
			return Output{}, fmt.Errorf("mput: a txn without compares did not succeed")
		}
		return Output{Rev: r.Header.Revision}, nil
	}
	return Output{}, fmt.Errorf("unknown op %d", in.Kind)
}

func toKV(kv *mvccpb.KeyValue) KV {
	return KV{Value: string(kv.Value), Create: kv.CreateRevision, Mod: kv.ModRevision, Version: kv.Version}
}

func keyIndex(k string) (int, bool) {
	if !strings.HasPrefix(k, KeyPrefix) {
		return 0, false
	}
	for i := 0; i < NumKeys; i++ {
		if KeyName(i) == k {
			return i, true
		}
	}
	return 0, false
}
