// Command valuerules is an example admission policy: values written under
// a prefix must respect a size limit and, optionally, be well-formed JSON
// objects carrying required fields. Puts inside txns (either branch, nested
// too) are checked the same way.
//
// Settings (JSON):
//
//	{"prefix": "/apps/", "max_value_bytes": 4096, "json": true, "required_fields": ["name", "owner"]}
package main

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/metastore-dev/metastore/policies/policy"
)

type settings struct {
	Prefix         string   `json:"prefix"`
	MaxValueBytes  int      `json:"max_value_bytes"`
	JSON           bool     `json:"json"`
	RequiredFields []string `json:"required_fields"`
}

var rules settings

func init() {
	policy.HandleInit(configure)
	policy.HandleAdmit(admit)
}

func configure(raw []byte) error {
	rules = settings{}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &rules); err != nil {
			return err
		}
	}
	if rules.MaxValueBytes < 0 {
		return fmt.Errorf("max_value_bytes %d is negative", rules.MaxValueBytes)
	}
	if len(rules.RequiredFields) > 0 && !rules.JSON {
		return fmt.Errorf("required_fields needs \"json\": true")
	}
	return nil
}

// check returns why a put breaks the rules, or nil.
func check(p *policy.PutRequest) error {
	if !bytes.HasPrefix(p.Key, []byte(rules.Prefix)) || p.IgnoreValue {
		return nil
	}
	if rules.MaxValueBytes > 0 && len(p.Value) > rules.MaxValueBytes {
		return fmt.Errorf("value of %q is %d bytes, over the %d-byte limit", p.Key, len(p.Value), rules.MaxValueBytes)
	}
	if !rules.JSON {
		return nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(p.Value, &obj); err != nil || obj == nil {
		return fmt.Errorf("value of %q is not a JSON object", p.Key)
	}
	for _, f := range rules.RequiredFields {
		if _, ok := obj[f]; !ok {
			return fmt.Errorf("value of %q lacks required field %q", p.Key, f)
		}
	}
	return nil
}

func admit(_ *policy.Request, a policy.Admission) policy.Result {
	var err error
	switch a.Kind {
	case policy.AdmitPut:
		var p policy.PutRequest
		if p, err = a.Put(); err == nil {
			err = check(&p)
		}
	case policy.AdmitTxn:
		var t policy.TxnRequest
		if t, err = a.Txn(); err == nil {
			err = t.Puts(check)
		}
	}
	if err != nil {
		return policy.Deny("value rules: " + err.Error())
	}
	return policy.Allow()
}

func main() {}
