// Command tenantisolation is an example policy: a user may touch only keys
// under <root><user>/ (by default /tenants/<user>/). A request that reaches
// into another tenant's keys is denied; one that stays inside the user's
// own prefix is allowed (or left to RBAC); one that touches no tenant key
// gets no opinion.
//
// Settings (JSON):
//
//	{"root": "/tenants/", "users_own_prefix": true, "admin_roles": ["root"]}
//
// users_own_prefix: true allows a request confined to the user's prefix
// outright; false returns no opinion so RBAC still decides. Users with an
// admin role are left to RBAC.
package main

import (
	"bytes"
	"encoding/json"
	"errors"

	"github.com/metastore-dev/metastore/policies/policy"
)

type settings struct {
	Root           string   `json:"root"`
	UsersOwnPrefix *bool    `json:"users_own_prefix"`
	AdminRoles     []string `json:"admin_roles"`
}

var (
	root       = []byte("/tenants/")
	allowOwn   = true
	adminRoles []string
	// own is the scratch buffer for the caller's prefix: built per call
	// without allocating.
	own []byte
)

func init() {
	policy.HandleInit(configure)
	policy.HandleAuthorize(authorize)
}

func configure(raw []byte) error {
	var s settings
	root, allowOwn, adminRoles = []byte("/tenants/"), true, nil
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
	}
	if s.Root != "" {
		root = []byte(s.Root)
	}
	if len(root) == 0 || root[len(root)-1] != '/' {
		return errors.New(`"root" must end with "/"`)
	}
	if s.UsersOwnPrefix != nil {
		allowOwn = *s.UsersOwnPrefix
	}
	adminRoles = s.AdminRoles
	return nil
}

func authorize(r *policy.Request) policy.Result {
	for _, role := range adminRoles {
		if r.HasRole(role) {
			return policy.NoOpinion()
		}
	}
	user := r.User()
	touched := false
	own = append(append(append(own[:0], root...), user...), '/')
	for _, rg := range r.Ranges() {
		if !rg.Overlaps(root) {
			continue
		}
		touched = true
		if len(user) == 0 || bytes.IndexByte(user, '/') >= 0 || !rg.Within(own) {
			return policy.Denyf("tenant isolation: user %q may only access keys under %q", user, own)
		}
	}
	if touched && allowOwn {
		return policy.Allow()
	}
	return policy.NoOpinion()
}

func main() {}
