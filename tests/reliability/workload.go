package reliability

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
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

// Conn is one client's stubs, over one connection.
type Conn struct {
	KV    pb.KVClient
	Lease pb.LeaseClient
	Watch pb.WatchClient
}

// NewConn returns the stubs of a connection.
func NewConn(cc *grpc.ClientConn) Conn {
	return Conn{KV: pb.NewKVClient(cc), Lease: pb.NewLeaseClient(cc), Watch: pb.NewWatchClient(cc)}
}

// Lease ids the workload names: LeasePool ids shared by every client
// (granted with a client-chosen id, so grants collide with ErrLeaseExist),
// and NeverGranted, which no grant uses (ErrLeaseNotFound). Server-chosen
// ids come on top.
const (
	LeasePoolBase = 1000
	LeasePool     = 4
	NeverGranted  = 999
)

// Client is one workload client: it issues random operations on the
// workload's keys and leases and records them.
type Client struct {
	ID      int
	Conn    Conn
	History *History
	Rand    *rand.Rand
	// Timeout bounds each call.
	Timeout time.Duration

	seq     int
	lastMod [NumKeys]int64 // newest mod_revision this client saw per key
	own     []int64        // server-chosen lease ids this client was granted and has not revoked
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
	case p < 18:
		in.Kind = OpGet
	case p < 24:
		in.Kind = OpRangeAll
	case p < 38:
		in.Kind = OpPut
	case p < 46:
		in.Kind = OpDelete
	case p < 66:
		in.Kind = OpCAS
		in.ExpectMod = c.lastMod[in.Key]
	case p < 74:
		in.Kind = OpMultiPut
		in.Key2 = (in.Key + 1 + c.Rand.IntN(NumKeys-1)) % NumKeys
	case p < 80:
		in.Kind = OpGrant
		if len(c.own) >= 3 {
			// Keep the lease set small: revoke the oldest of one's own.
			in.Kind, in.Lease = OpRevoke, c.own[0]
			c.own = c.own[1:]
		} else if c.Rand.IntN(2) == 0 {
			in.Lease = LeasePoolBase + int64(c.Rand.IntN(LeasePool))
		}
	case p < 84:
		in.Kind, in.Lease = OpRevoke, c.someLease()
		c.own = slices.DeleteFunc(c.own, func(id int64) bool { return id == in.Lease })
	case p < 93:
		in.Kind, in.Lease = OpLeasePut, c.someLease()
	case p < 96:
		in.Kind, in.Lease = OpKeepAlive, c.someLease()
	default:
		in.Kind, in.Lease = OpTimeToLive, c.someLease()
	}
	return in
}

// someLease picks a lease id to name: mostly a shared or an own one,
// sometimes one that never exists.
func (c *Client) someLease() int64 {
	switch p := c.Rand.IntN(20); {
	case p == 0:
		return NeverGranted
	case p < 10 && len(c.own) > 0:
		return c.own[c.Rand.IntN(len(c.own))]
	default:
		return LeasePoolBase + int64(c.Rand.IntN(LeasePool))
	}
}

// Do executes in against the server. Any error makes the outcome unknown.
func (c *Client) Do(in Input) Output {
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	out, err := Execute(ctx, c.Conn, in)
	if err != nil {
		return Output{Unknown: true}
	}
	if out.Err != "" {
		return out
	}
	switch in.Kind {
	case OpGrant:
		if in.Lease == 0 {
			c.own = append(c.own, out.Lease)
		}
	case OpLeasePut:
		c.lastMod[in.Key] = out.Rev
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

// knownError returns the message of an error that says the call changed
// nothing (see Output.Err), or "".
func knownError(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, e := range []error{rpctypes.ErrGRPCLeaseNotFound, rpctypes.ErrGRPCLeaseExist} {
		if want := status.Convert(e); st.Code() == want.Code() && st.Message() == want.Message() {
			return st.Message()
		}
	}
	return ""
}

// Execute sends one operation and converts the response.
func Execute(ctx context.Context, c Conn, in Input) (Output, error) {
	out, err := execute(ctx, c, in)
	if err != nil {
		if msg := knownError(err); msg != "" {
			return Output{Err: msg}, nil
		}
	}
	return out, err
}

func execute(ctx context.Context, c Conn, in Input) (Output, error) {
	kv := c.KV
	key := []byte(KeyName(in.Key))
	switch in.Kind {
	case OpState:
		out, err := execute(ctx, c, Input{Kind: OpRangeAll})
		if err != nil {
			return out, err
		}
		l, err := c.Lease.LeaseLeases(ctx, &pb.LeaseLeasesRequest{}, waitReady)
		if err != nil {
			return Output{}, err
		}
		ids := make([]int64, len(l.Leases))
		for i, x := range l.Leases {
			ids[i] = x.ID
		}
		out.Leases = State{}.withLeases(ids).Leases
		return out, nil
	case OpGrant:
		r, err := c.Lease.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: in.Lease, TTL: LeaseTTL}, waitReady)
		if err != nil {
			return Output{}, err
		}
		if r.Error != "" {
			return Output{}, fmt.Errorf("grant: %s", r.Error)
		}
		if r.TTL != LeaseTTL {
			return Output{}, fmt.Errorf("grant: TTL %d, want %d", r.TTL, LeaseTTL)
		}
		return Output{Rev: r.Header.Revision, Lease: r.ID}, nil
	case OpRevoke:
		r, err := c.Lease.LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: in.Lease}, waitReady)
		if err != nil {
			return Output{}, err
		}
		return Output{Rev: r.Header.Revision}, nil
	case OpLeasePut:
		r, err := kv.Put(ctx, &pb.PutRequest{Key: key, Value: []byte(in.Value), Lease: in.Lease, PrevKv: true}, waitReady)
		if err != nil {
			return Output{}, err
		}
		out := Output{Rev: r.Header.Revision}
		if r.PrevKv != nil {
			out.KV = toKV(r.PrevKv)
		}
		return out, nil
	case OpKeepAlive:
		kctx, cancel := context.WithCancel(ctx)
		defer cancel()
		st, err := c.Lease.LeaseKeepAlive(kctx, waitReady)
		if err != nil {
			return Output{}, err
		}
		if err := st.Send(&pb.LeaseKeepAliveRequest{ID: in.Lease}); err != nil {
			return Output{}, err
		}
		r, err := st.Recv()
		if err != nil {
			return Output{}, err
		}
		if r.ID != in.Lease {
			return Output{}, fmt.Errorf("keepalive: answer for %x, want %x", r.ID, in.Lease)
		}
		return Output{TTL: r.TTL}, nil
	case OpTimeToLive:
		r, err := c.Lease.LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: in.Lease}, waitReady)
		if err != nil {
			return Output{}, err
		}
		return Output{TTL: r.TTL, GrantedTTL: r.GrantedTTL}, nil
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
	return KV{Value: string(kv.Value), Create: kv.CreateRevision, Mod: kv.ModRevision, Version: kv.Version, Lease: kv.Lease}
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
