package auth

import (
	"encoding/binary"
	"fmt"
	"sort"

	"go.etcd.io/etcd/api/v3/authpb"
)

// State is the persisted auth state in etcd's own types: what an etcd
// database's auth buckets hold, and what a migration moves in either
// direction. Passwords are bcrypt hashes, moved as they are.
type State struct {
	Enabled  bool
	Revision uint64
	Users    []*authpb.User
	Roles    []*authpb.Role
}

// ReadState reads the persisted auth state (users and roles in name order).
func ReadState(r Reader) (*State, error) {
	st := &State{}
	raw, err := r.Get(keyEnabled)
	if err != nil {
		return nil, err
	}
	st.Enabled = len(raw) == 1 && raw[0] == 1
	if st.Revision, err = getUint(r, keyRevision, 1); err != nil {
		return nil, err
	}
	err = r.Scan(prefixRole, func(key string, value []byte) error {
		pr := &authpb.Role{}
		if err := pr.Unmarshal(value); err != nil {
			return fmt.Errorf("auth: decode role %q: %w", key, err)
		}
		st.Roles = append(st.Roles, pr)
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = r.Scan(prefixUser, func(key string, value []byte) error {
		u, err := decodeUser(value)
		if err != nil {
			return fmt.Errorf("auth: decode user %q: %w", key, err)
		}
		pu := &authpb.User{Name: []byte(u.name), Password: u.password, Roles: u.roles}
		if u.noPassword {
			pu.Options = &authpb.UserAddOptions{NoPassword: true}
		}
		st.Users = append(st.Users, pu)
		return nil
	})
	return st, err
}

// WriteState persists st into an empty auth state (a data directory being
// restored): the switch, the revision, every role and every user. Roles of
// a user are kept sorted, as the store relies on it; a user's credentials
// date from before any token this store issues.
func WriteState(w Writer, st *State) error {
	enabled := []byte{0}
	if st.Enabled {
		enabled[0] = 1
	}
	if err := w.Put(keyEnabled, enabled); err != nil {
		return err
	}
	if err := w.Put(keyRevision, binary.BigEndian.AppendUint64(nil, st.Revision)); err != nil {
		return err
	}
	for _, r := range st.Roles {
		if len(r.Name) == 0 {
			return fmt.Errorf("auth: role without a name")
		}
		raw, err := r.Marshal()
		if err != nil {
			return err
		}
		if err := w.Put(prefixRole+string(r.Name), raw); err != nil {
			return err
		}
	}
	for _, pu := range st.Users {
		if len(pu.Name) == 0 {
			return fmt.Errorf("auth: user without a name")
		}
		roles := append([]string(nil), pu.Roles...)
		sort.Strings(roles)
		u := &user{name: string(pu.Name), password: pu.Password, roles: roles,
			noPassword: pu.Options != nil && pu.Options.NoPassword}
		raw, err := encodeUser(u)
		if err != nil {
			return err
		}
		if err := w.Put(prefixUser+u.name, raw); err != nil {
			return err
		}
	}
	return nil
}
