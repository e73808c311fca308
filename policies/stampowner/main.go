// Command stampowner is an example mutating admission policy: JSON object
// values written under a prefix get a field set to the writing user's name
// (an "owner" stamp that clients cannot forge), and are normalised to
// compact JSON with sorted keys. Puts in txns (both branches, nested) are
// stamped too; the host authorizes the mutated request again.
//
// Settings (JSON):
//
//	{"prefix": "/apps/", "field": "owner"}
package main

import (
	"bytes"
	"encoding/json"

	"github.com/metastore-dev/metastore/policies/policy"
)

var (
	prefix = []byte("/apps/")
	field  = "owner"
	user   []byte
)

func init() {
	policy.HandleInit(configure)
	policy.HandleAdmit(admit)
}

func configure(raw []byte) error {
	var s struct {
		Prefix string `json:"prefix"`
		Field  string `json:"field"`
	}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
	}
	prefix, field = []byte("/apps/"), "owner"
	if s.Prefix != "" {
		prefix = []byte(s.Prefix)
	}
	if s.Field != "" {
		field = s.Field
	}
	return nil
}

// stamp rewrites p's value in place; it reports whether it changed.
func stamp(p *policy.PutRequest) bool {
	if !bytes.HasPrefix(p.Key, prefix) || p.IgnoreValue {
		return false
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(p.Value, &obj); err != nil || obj == nil {
		return false // not a JSON object: not ours to judge
	}
	owner, _ := json.Marshal(string(user))
	obj[field] = owner
	out, err := json.Marshal(obj) // sorted keys, compact
	if err != nil || bytes.Equal(out, p.Value) {
		return false
	}
	p.Value = out
	return true
}

func admit(r *policy.Request, a policy.Admission) policy.Result {
	user = r.User()
	switch a.Kind {
	case policy.AdmitPut:
		p, err := a.Put()
		if err != nil {
			return policy.Deny(err.Error())
		}
		if stamp(&p) {
			return policy.Mutate(p.Marshal(nil))
		}
	case policy.AdmitTxn:
		t, err := a.Txn()
		if err != nil {
			return policy.Deny(err.Error())
		}
		changed := false
		_ = t.Puts(func(p *policy.PutRequest) error {
			if stamp(p) {
				changed = true
			}
			return nil
		})
		if changed {
			return policy.Mutate(t.Marshal(nil))
		}
	}
	return policy.Allow()
}

func main() {}
