package wasmpolicy

import (
	"bytes"
	"context"
	"fmt"
	"sync"

	"github.com/metastore-dev/metastore/auth"
	"github.com/metastore-dev/metastore/wasmhost"
)

// Match selects the requests a policy sees: one whose key ranges overlap
// one of Prefixes (every request when Prefixes is empty) and, when Users or
// Roles is set, whose user is one of Users or holds one of Roles.
type Match struct {
	Prefixes [][]byte
	Users    []string
	Roles    []string
}

// Env is what the adapter asks of the server.
type Env struct {
	// Roles returns a user's roles (auth.Store.UserRoles).
	Roles func(user string) []string
	// Tenant returns the tenant owning key and its usage; nil or "" for
	// none.
	Tenant func(key []byte) (name string, keys, bytes uint64)
	// Audit receives the verdict of a policy in audit mode.
	Audit func(policy string, hook wasmhost.Hook, d wasmhost.Decision)
}

// DenyError is a denial by a policy; Reason is the guest's (or the failure
// that on_error turned into a denial).
type DenyError struct {
	Policy string
	Hook   wasmhost.Hook
	Reason string
}

func (e *DenyError) Error() string {
	return fmt.Sprintf("policy %q denied the request: %s", e.Policy, e.Reason)
}

// Is makes a policy's authorization denial an auth.ErrPermissionDenied
// for callers that only ask that.
func (e *DenyError) Is(target error) bool {
	return e.Hook == wasmhost.HookAuthorize && target == auth.ErrPermissionDenied
}

// rangeOverlapsPrefix reports whether [key, end) in etcd's convention
// contains a key starting with prefix.
func rangeOverlapsPrefix(key, end, prefix []byte) bool {
	switch {
	case len(end) == 0:
		return bytes.HasPrefix(key, prefix)
	case len(end) == 1 && end[0] == 0: // every key >= key
	case bytes.Compare(end, key) <= 0:
		return false
	case bytes.Compare(prefix, end) >= 0:
		return false
	}
	return bytes.HasPrefix(key, prefix) || bytes.Compare(key, prefix) < 0
}

// Matches reports whether the policy sees r.
func (m *Match) Matches(r *auth.Request, roles func(string) []string) bool {
	if len(m.Users) > 0 || len(m.Roles) > 0 {
		ok := false
		for _, u := range m.Users {
			ok = ok || u == r.User
		}
		if !ok && len(m.Roles) > 0 && roles != nil {
			for _, have := range roles(r.User) {
				for _, want := range m.Roles {
					ok = ok || have == want
				}
			}
		}
		if !ok {
			return false
		}
	}
	if len(m.Prefixes) == 0 {
		return true
	}
	for i := range r.Ranges {
		kr := &r.Ranges[i]
		for _, p := range m.Prefixes {
			if rangeOverlapsPrefix(kr.Key, kr.End, p) {
				return true
			}
		}
	}
	return false
}

// scratch is a pooled encoding buffer.
type scratch struct {
	req    wasmhost.Request
	ranges []wasmhost.Range
	buf    []byte
}

var scratches = sync.Pool{New: func() any { return new(scratch) }}

// fill converts r into the ABI request.
func (s *scratch) fill(r *auth.Request, env *Env) {
	s.req = ABIRequest(r, env, s.ranges[:0])
	s.ranges = s.req.Ranges
}

// ABIRequest converts r into the request a policy receives: r's op, flags,
// revision, user and ranges (appended to ranges, which may be nil), the
// user's roles and the tenant owning the first range's key from env (nil:
// none). It is the one conversion from auth's request to the ABI's; the
// policy CLI encodes its samples with it too.
func ABIRequest(r *auth.Request, env *Env, ranges []wasmhost.Range) wasmhost.Request {
	for i := range r.Ranges {
		kr := &r.Ranges[i]
		ranges = append(ranges, wasmhost.Range{Perm: kr.Perm, Key: kr.Key, End: kr.End})
	}
	req := wasmhost.Request{Op: r.Op, Flags: r.Flags, Revision: r.Revision, User: r.User, Ranges: ranges}
	if env == nil {
		return req
	}
	if env.Roles != nil && r.User != "" {
		req.Roles = env.Roles(r.User)
	}
	if env.Tenant != nil && len(r.Ranges) > 0 {
		req.Tenant, req.TenantKeys, req.TenantBytes = env.Tenant(r.Ranges[0].Key)
	}
	return req
}

func (s *scratch) release() {
	clear(s.ranges)
	s.ranges = s.ranges[:0]
	s.req = wasmhost.Request{}
	if cap(s.buf) > 64<<10 {
		s.buf = nil // do not pin a large admission buffer
	}
	scratches.Put(s)
}

// Authorizer is a policy with the authorize hook as a member of an
// auth.Chain.
type Authorizer struct {
	Policy *wasmhost.Policy
	Match  Match
	Audit  bool
	Env    *Env
}

var _ auth.Authorizer = (*Authorizer)(nil)

// Authorize implements auth.Authorizer.
func (a *Authorizer) Authorize(ctx context.Context, r *auth.Request) (auth.Decision, error) {
	if !a.Match.Matches(r, a.Env.Roles) {
		return auth.NoOpinion, nil
	}
	s := scratches.Get().(*scratch)
	s.fill(r, a.Env)
	var err error
	s.buf, err = wasmhost.AppendRequest(s.buf[:0], &s.req)
	if err != nil {
		s.release()
		return auth.Deny, &DenyError{Policy: a.Policy.Name(), Hook: wasmhost.HookAuthorize, Reason: err.Error()}
	}
	d := a.Policy.Authorize(ctx, s.buf)
	s.release()
	if a.Audit {
		if a.Env.Audit != nil {
			a.Env.Audit(a.Policy.Name(), wasmhost.HookAuthorize, d)
		}
		return auth.NoOpinion, nil
	}
	switch d.Verdict {
	case wasmhost.Allow:
		return auth.Allow, nil
	case wasmhost.NoOpinion:
		return auth.NoOpinion, nil
	}
	return auth.Deny, &DenyError{Policy: a.Policy.Name(), Hook: wasmhost.HookAuthorize, Reason: d.Reason}
}

// Admitter is a policy with the admit hook.
type Admitter struct {
	Policy *wasmhost.Policy
	Match  Match
	Audit  bool
	Env    *Env
}

// Admit runs the policy on a write: r describes its ranges (as for
// authorization) and msg is its protobuf encoding of kind. It returns the
// decision, with a DenyError for a denial; for Mutated, Decision.Mutation
// holds the replacement message, already checked to stay in its lane
// (CheckMutation; one that does not is a failed call: KindBadMutation and
// on_error). A request the policy does not match, and a policy in audit
// mode, get Allow.
func (a *Admitter) Admit(ctx context.Context, r *auth.Request, kind wasmhost.AdmitKind, msg []byte) (wasmhost.Decision, error) {
	if !a.Match.Matches(r, a.Env.Roles) {
		return wasmhost.Decision{Verdict: wasmhost.Allow}, nil
	}
	s := scratches.Get().(*scratch)
	s.fill(r, a.Env)
	var err error
	s.buf, err = wasmhost.AppendAdmission(s.buf[:0], &s.req, kind, msg)
	if err != nil {
		s.release()
		return wasmhost.Decision{Verdict: wasmhost.Deny}, &DenyError{Policy: a.Policy.Name(), Hook: wasmhost.HookAdmit, Reason: err.Error()}
	}
	d := a.Policy.Admit(ctx, s.buf)
	s.release()
	if a.Audit {
		if a.Env.Audit != nil {
			a.Env.Audit(a.Policy.Name(), wasmhost.HookAdmit, d)
		}
		return wasmhost.Decision{Verdict: wasmhost.Allow}, nil
	}
	if d.Verdict == wasmhost.Mutated {
		if err := CheckMutation(kind, msg, d.Mutation, a.Match.Prefixes); err != nil {
			// A failed admission: counted, and on_error decides (reject,
			// or ignore: the write goes on unchanged).
			d = a.Policy.Fail(wasmhost.HookAdmit, wasmhost.KindBadMutation, err)
		}
	}
	if d.Verdict == wasmhost.Deny {
		return d, &DenyError{Policy: a.Policy.Name(), Hook: wasmhost.HookAdmit, Reason: d.Reason}
	}
	return d, nil
}
