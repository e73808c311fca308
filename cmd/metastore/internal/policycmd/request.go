package policycmd

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"gopkg.in/yaml.v3"

	"github.com/metastore-dev/metastore/auth"
	"github.com/metastore-dev/metastore/auth/wasmpolicy"
	"github.com/metastore-dev/metastore/server/guard"
	"github.com/metastore-dev/metastore/wasmhost"

	"github.com/metastore-dev/metastore/internal/policyabi"
)

// Request is one sample request as written in YAML.
type Request struct {
	Name     string   `yaml:"name"`
	Hook     string   `yaml:"hook"`
	Op       string   `yaml:"op"`
	User     string   `yaml:"user"`
	Roles    []string `yaml:"roles"`
	Revision int64    `yaml:"revision"`
	Flags    []string `yaml:"flags"`
	Tenant   struct {
		Name  string `yaml:"name"`
		Keys  uint64 `yaml:"keys"`
		Bytes uint64 `yaml:"bytes"`
	} `yaml:"tenant"`
	Ranges      []RangeSpec      `yaml:"ranges"`
	Put         *PutSpec         `yaml:"put"`
	DeleteRange *DeleteSpec      `yaml:"delete_range"`
	Txn         *TxnSpec         `yaml:"txn"`
	Range       *RangeReqSpec    `yaml:"range"`
	LeaseRevoke *LeaseRevokeSpec `yaml:"lease_revoke"`
	// LeaseKeys are the keys attached to each lease, as the server would
	// find them: a put to a lease then needs WRITE on them too, and a
	// revoke needs WRITE on each (unless roles holds root).
	LeaseKeys map[int64][]string `yaml:"lease_keys"`
}

// LeaseRevokeSpec is a LeaseRevokeRequest.
type LeaseRevokeSpec struct {
	ID int64 `yaml:"id"`
}

// RangeSpec is a key range; Prefix: true makes End the prefix end, and an
// End of "\0" (written "\x00" in YAML double quotes) means every key >= Key.
type RangeSpec struct {
	Perm   string `yaml:"perm"`
	Key    string `yaml:"key"`
	End    string `yaml:"end"`
	Prefix bool   `yaml:"prefix"`
}

// PutSpec is a PutRequest.
type PutSpec struct {
	Key         string `yaml:"key"`
	Value       string `yaml:"value"`
	Lease       int64  `yaml:"lease"`
	PrevKV      bool   `yaml:"prev_kv"`
	IgnoreValue bool   `yaml:"ignore_value"`
	IgnoreLease bool   `yaml:"ignore_lease"`
}

// DeleteSpec is a DeleteRangeRequest.
type DeleteSpec struct {
	Key      string `yaml:"key"`
	RangeEnd string `yaml:"range_end"`
	Prefix   bool   `yaml:"prefix"`
	PrevKV   bool   `yaml:"prev_kv"`
}

// RangeReqSpec is a RangeRequest (inside a txn, or as the request of an
// authorization).
type RangeReqSpec struct {
	Key          string `yaml:"key"`
	RangeEnd     string `yaml:"range_end"`
	Prefix       bool   `yaml:"prefix"`
	Revision     int64  `yaml:"revision"`
	Serializable bool   `yaml:"serializable"`
	KeysOnly     bool   `yaml:"keys_only"`
	CountOnly    bool   `yaml:"count_only"`
}

// CompareSpec is a Compare: target version, create, mod, value or lease;
// result equal, greater, less or not_equal; the operand in the field of
// the target's name.
type CompareSpec struct {
	Key      string `yaml:"key"`
	RangeEnd string `yaml:"range_end"`
	Target   string `yaml:"target"`
	Result   string `yaml:"result"`
	Version  int64  `yaml:"version"`
	Create   int64  `yaml:"create"`
	Mod      int64  `yaml:"mod"`
	Value    string `yaml:"value"`
	Lease    int64  `yaml:"lease"`
}

// OpSpec is one RequestOp: exactly one field set.
type OpSpec struct {
	Range       *RangeReqSpec `yaml:"range"`
	Put         *PutSpec      `yaml:"put"`
	DeleteRange *DeleteSpec   `yaml:"delete_range"`
	Txn         *TxnSpec      `yaml:"txn"`
}

// TxnSpec is a TxnRequest.
type TxnSpec struct {
	Compare []CompareSpec `yaml:"compare"`
	Success []OpSpec      `yaml:"success"`
	Failure []OpSpec      `yaml:"failure"`
}

// ReadRequests reads one request or a list of them from a YAML file.
func ReadRequests(path string) ([]Request, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var node yaml.Node
	if err := yaml.Unmarshal(data, &node); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(node.Content) == 0 {
		return nil, fmt.Errorf("%s: no request", path)
	}
	var reqs []Request
	decode := func(n *yaml.Node, into any) error {
		var buf bytes.Buffer
		enc := yaml.NewEncoder(&buf)
		if err := enc.Encode(n); err != nil {
			return err
		}
		dec := yaml.NewDecoder(&buf)
		dec.KnownFields(true)
		return dec.Decode(into)
	}
	root := node.Content[0]
	if root.Kind == yaml.SequenceNode {
		err = decode(root, &reqs)
	} else {
		var r Request
		err = decode(root, &r)
		reqs = []Request{r}
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return reqs, nil
}

var ops = map[string]wasmhost.Op{
	"range": policyabi.OpRange, "put": policyabi.OpPut, "delete_range": policyabi.OpDeleteRange, "txn": policyabi.OpTxn,
	"watch": policyabi.OpWatch, "lease_revoke": policyabi.OpLeaseRevoke, "compact": policyabi.OpCompact, "admin": policyabi.OpAdmin,
}

var flagBits = map[string]uint8{
	"serializable": policyabi.FlagSerializable, "keys_only": policyabi.FlagKeysOnly,
	"count_only": policyabi.FlagCountOnly, "prev_kv": policyabi.FlagPrevKV,
}

// prefixEnd is etcd's clientv3.GetPrefixRangeEnd.
func prefixEnd(prefix []byte) []byte {
	for i := len(prefix) - 1; i >= 0; i-- {
		if prefix[i] < 0xff {
			end := append([]byte(nil), prefix[:i+1]...)
			end[i]++
			return end
		}
	}
	return []byte{0}
}

func rangeEnd(key, end string, prefix bool) []byte {
	if prefix {
		return prefixEnd([]byte(key))
	}
	if end == "" {
		return nil
	}
	return []byte(end)
}

func (p *PutSpec) proto() *pb.PutRequest {
	return &pb.PutRequest{Key: []byte(p.Key), Value: []byte(p.Value), Lease: p.Lease, PrevKv: p.PrevKV, IgnoreValue: p.IgnoreValue, IgnoreLease: p.IgnoreLease}
}

func (d *DeleteSpec) proto() *pb.DeleteRangeRequest {
	return &pb.DeleteRangeRequest{Key: []byte(d.Key), RangeEnd: rangeEnd(d.Key, d.RangeEnd, d.Prefix), PrevKv: d.PrevKV}
}

func (r *RangeReqSpec) proto() *pb.RangeRequest {
	return &pb.RangeRequest{Key: []byte(r.Key), RangeEnd: rangeEnd(r.Key, r.RangeEnd, r.Prefix), Revision: r.Revision,
		Serializable: r.Serializable, KeysOnly: r.KeysOnly, CountOnly: r.CountOnly}
}

func (t *TxnSpec) proto() (*pb.TxnRequest, error) {
	x := &pb.TxnRequest{}
	for i, c := range t.Compare {
		cmp := &pb.Compare{Key: []byte(c.Key), RangeEnd: []byte(c.RangeEnd)}
		if c.RangeEnd == "" {
			cmp.RangeEnd = nil
		}
		switch c.Result {
		case "", "equal":
			cmp.Result = pb.Compare_EQUAL
		case "greater":
			cmp.Result = pb.Compare_GREATER
		case "less":
			cmp.Result = pb.Compare_LESS
		case "not_equal":
			cmp.Result = pb.Compare_NOT_EQUAL
		default:
			return nil, fmt.Errorf("compare %d: unknown result %q", i, c.Result)
		}
		switch c.Target {
		case "version":
			cmp.Target, cmp.TargetUnion = pb.Compare_VERSION, &pb.Compare_Version{Version: c.Version}
		case "create":
			cmp.Target, cmp.TargetUnion = pb.Compare_CREATE, &pb.Compare_CreateRevision{CreateRevision: c.Create}
		case "mod":
			cmp.Target, cmp.TargetUnion = pb.Compare_MOD, &pb.Compare_ModRevision{ModRevision: c.Mod}
		case "value":
			cmp.Target, cmp.TargetUnion = pb.Compare_VALUE, &pb.Compare_Value{Value: []byte(c.Value)}
		case "lease":
			cmp.Target, cmp.TargetUnion = pb.Compare_LEASE, &pb.Compare_Lease{Lease: c.Lease}
		default:
			return nil, fmt.Errorf("compare %d: unknown target %q (want version, create, mod, value or lease)", i, c.Target)
		}
		x.Compare = append(x.Compare, cmp)
	}
	conv := func(specs []OpSpec) ([]*pb.RequestOp, error) {
		var out []*pb.RequestOp
		for i, s := range specs {
			op := &pb.RequestOp{}
			n := 0
			if s.Range != nil {
				op.Request, n = &pb.RequestOp_RequestRange{RequestRange: s.Range.proto()}, n+1
			}
			if s.Put != nil {
				op.Request, n = &pb.RequestOp_RequestPut{RequestPut: s.Put.proto()}, n+1
			}
			if s.DeleteRange != nil {
				op.Request, n = &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: s.DeleteRange.proto()}, n+1
			}
			if s.Txn != nil {
				inner, err := s.Txn.proto()
				if err != nil {
					return nil, err
				}
				op.Request, n = &pb.RequestOp_RequestTxn{RequestTxn: inner}, n+1
			}
			if n != 1 {
				return nil, fmt.Errorf("op %d: set exactly one of range, put, delete_range, txn", i)
			}
			out = append(out, op)
		}
		return out, nil
	}
	var err error
	if x.Success, err = conv(t.Success); err != nil {
		return nil, fmt.Errorf("success: %w", err)
	}
	if x.Failure, err = conv(t.Failure); err != nil {
		return nil, fmt.Errorf("failure: %w", err)
	}
	return x, nil
}

// Compiled is a sample request ready for the host.
type Compiled struct {
	Name string
	Hook wasmhost.Hook
	Kind wasmhost.AdmitKind // 0 for an authorization
	// Encoded is the request as the guest receives it.
	Encoded []byte
	// Message is the admitted protobuf message (admission only).
	Message []byte
}

// sampleLeases answers Describe from a sample: the lease keys it lists,
// and root (by the sample's roles) is exempt, as on the server.
type sampleLeases struct{ r *Request }

func (l sampleLeases) LeaseKeys(id int64) [][]byte {
	var keys [][]byte
	for _, k := range l.r.LeaseKeys[id] {
		keys = append(keys, []byte(k))
	}
	return keys
}

func (l sampleLeases) LeaseExempt(string) bool { return slices.Contains(l.r.Roles, "root") }

// Compile turns a sample into the encoded request. Unless the sample lists
// its ranges, they are derived from its message by guard.Describe, the
// function the server authorizes with, and encoded by the conversion the
// server's policies use (wasmpolicy.ABIRequest): eval answers as the
// server would.
func (r *Request) Compile() (*Compiled, error) {
	var kind wasmhost.AdmitKind
	var msg []byte
	var err error
	var described any // the message Describe derives ranges from
	set := 0
	if r.Put != nil {
		set++
		kind = policyabi.AdmitPut
		p := r.Put.proto()
		msg, err = p.Marshal()
		described = p
	}
	if r.DeleteRange != nil {
		set++
		kind = policyabi.AdmitDeleteRange
		d := r.DeleteRange.proto()
		msg, err = d.Marshal()
		described = d
	}
	if r.Txn != nil {
		set++
		kind = policyabi.AdmitTxn
		var t *pb.TxnRequest
		if t, err = r.Txn.proto(); err == nil {
			msg, err = t.Marshal()
			described = t
		}
	}
	if r.Range != nil {
		set++
		described = r.Range.proto()
	}
	if r.LeaseRevoke != nil {
		set++
		described = &pb.LeaseRevokeRequest{ID: r.LeaseRevoke.ID}
	}
	if err != nil {
		return nil, err
	}
	if set > 1 {
		return nil, errors.New("set at most one of put, delete_range, txn, range, lease_revoke")
	}
	ar := new(auth.Request)
	if described != nil {
		guard.Describe(ar, r.User, described, sampleLeases{r})
	} else {
		ar.Reset(0, r.User)
	}
	if r.Range == nil {
		ar.Revision = r.Revision
	}
	for _, f := range r.Flags {
		bit, ok := flagBits[f]
		if !ok {
			return nil, fmt.Errorf("unknown flag %q (want serializable, keys_only, count_only or prev_kv)", f)
		}
		ar.Flags |= bit
	}
	if r.Op != "" {
		op, ok := ops[r.Op]
		if !ok {
			return nil, fmt.Errorf("unknown op %q", r.Op)
		}
		ar.Op = op
	}
	if ar.Op == 0 {
		return nil, errors.New("no op: set op, or one of put, delete_range, txn, range, lease_revoke")
	}
	req := wasmpolicy.ABIRequest(ar, nil, nil)
	// The server looks these up; a sample states them.
	req.Roles = r.Roles
	req.Tenant, req.TenantKeys, req.TenantBytes = r.Tenant.Name, r.Tenant.Keys, r.Tenant.Bytes
	if len(r.Ranges) > 0 {
		req.Ranges = nil
		for i, rs := range r.Ranges {
			var perm wasmhost.Perm
			switch strings.ToLower(rs.Perm) {
			case "read", "":
				perm = policyabi.PermRead
			case "write":
				perm = policyabi.PermWrite
			default:
				return nil, fmt.Errorf("range %d: unknown perm %q (want read or write)", i, rs.Perm)
			}
			req.Ranges = append(req.Ranges, wasmhost.Range{Perm: perm, Key: []byte(rs.Key), End: rangeEnd(rs.Key, rs.End, rs.Prefix)})
		}
	}
	c := &Compiled{Name: r.Name, Kind: kind, Message: msg}
	switch r.Hook {
	case "":
		if kind != 0 {
			c.Hook = wasmhost.HookAdmit
		}
	case "authorize":
	case "admit":
		c.Hook = wasmhost.HookAdmit
	default:
		return nil, fmt.Errorf("unknown hook %q (want authorize or admit)", r.Hook)
	}
	if c.Hook == wasmhost.HookAdmit {
		if kind == 0 {
			return nil, errors.New("hook admit needs a put, delete_range or txn message")
		}
		c.Encoded, err = wasmhost.AppendAdmission(nil, &req, kind, msg)
	} else {
		c.Encoded, err = wasmhost.AppendRequest(nil, &req)
	}
	return c, err
}
