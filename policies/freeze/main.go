// Command freeze is an example admission policy: while the "frozen"
// setting is true, writes (puts, deletes, and txns that write) touching the
// configured prefixes are refused with the configured message. Flip the
// setting and reload the policy (SIGHUP) to start or end a freeze window.
//
// Settings (JSON):
//
//	{"frozen": true, "prefixes": ["/config/"], "message": "change freeze until Monday"}
//
// An empty prefix list freezes every key.
package main

import (
	"encoding/json"

	"github.com/metastore-dev/metastore/policies/policy"
)

type settings struct {
	Frozen   bool     `json:"frozen"`
	Prefixes []string `json:"prefixes"`
	Message  string   `json:"message"`
}

var (
	frozen   bool
	prefixes [][]byte
	message  string
)

func init() {
	policy.HandleInit(configure)
	policy.HandleAdmit(admit)
}

func configure(raw []byte) error {
	var s settings
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
	}
	frozen, message, prefixes = s.Frozen, s.Message, nil
	if message == "" {
		message = "writes are frozen"
	}
	for _, p := range s.Prefixes {
		prefixes = append(prefixes, []byte(p))
	}
	if frozen {
		policy.Logf(policy.LevelInfo, "freeze active on %d prefixes", len(prefixes))
	}
	return nil
}

func admit(r *policy.Request, _ policy.Admission) policy.Result {
	if !frozen {
		return policy.Allow()
	}
	for _, rg := range r.Ranges() {
		if rg.Perm != policy.PermWrite {
			continue
		}
		if len(prefixes) == 0 {
			return policy.Deny(message)
		}
		for _, p := range prefixes {
			if rg.Overlaps(p) {
				return policy.Denyf("%s (%q is frozen)", message, p)
			}
		}
	}
	return policy.Allow()
}

func main() {}
