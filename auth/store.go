package auth

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/puzpuzpuz/xsync/v4"
	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"golang.org/x/crypto/bcrypt"

	"github.com/metastore-dev/metastore/internal/policyabi"
)

// Reader reads the persisted auth state (at Open).
type Reader interface {
	// Get returns the value stored under key, or nil.
	Get(key string) ([]byte, error)
	// Scan calls fn for every key starting with prefix, in key order; value
	// is valid only during the call.
	Scan(prefix string, fn func(key string, value []byte) error) error
}

// Writer receives the writes of one mutation; they become durable with the
// caller's batch.
type Writer interface {
	Put(key string, value []byte) error
	Delete(key string) error
}

// Keys of the persisted state.
const (
	keyEnabled    = "auth/enabled"
	keyRevision   = "auth/revision"
	keyTokensFrom = "auth/tokens_from"
	prefixUser    = "auth/user/"
	prefixRole    = "auth/role/"
)

const (
	// RootUser and RootRole are etcd's administrator user and role.
	RootUser = "root"
	RootRole = "root"

	userRecordVersion = 1
)

// rootPerm is what RoleGet shows for the root role, as etcd.
var rootPerm = authpb.Permission{PermType: authpb.READWRITE, Key: []byte{}, RangeEnd: []byte{0}}

type user struct {
	name       string
	password   []byte // bcrypt hash
	roles      []string
	noPassword bool
	// credRev is the auth revision at which the user was created or its
	// password last changed: tokens issued before it are void.
	credRev uint64
	root    bool     // holds the root role
	perms   *permSet // effective permissions of all roles
}

type role struct {
	name  string
	perms []*authpb.Permission // sorted by key, as etcd keeps them
}

// state is the auth switch and revision; replaced, never mutated.
type state struct {
	enabled bool
	rev     uint64
	// tokensFrom voids tokens issued before the last AuthDisable.
	tokensFrom uint64
	// epoch changes with every mutation, including AuthEnable (which keeps
	// the revision, as etcd's does). In memory only.
	epoch uint64
}

// Options configure a Store.
type Options struct {
	// BcryptCost is the cost of password hashes; out of range means
	// bcrypt.DefaultCost, as etcd.
	BcryptCost int
	Logger     *slog.Logger
}

// Store is the users, roles and switch of etcd's auth, and the built-in RBAC
// Authorizer. Reads and permission checks are lock-free; mutations are
// serialized (the server applies them from one goroutine).
type Store struct {
	lg         *slog.Logger
	bcryptCost int

	mu    sync.Mutex // serializes mutations; readers never take it
	st    atomic.Pointer[state]
	users *xsync.Map[string, *user]
	roles *xsync.Map[string, *role]
}

var _ Authorizer = (*Store)(nil)

// Open loads the persisted auth state.
func Open(r Reader, opts Options) (*Store, error) {
	s := &Store{
		lg:         opts.Logger,
		bcryptCost: opts.BcryptCost,
		users:      xsync.NewMap[string, *user](),
		roles:      xsync.NewMap[string, *role](),
	}
	if s.lg == nil {
		s.lg = slog.New(slog.DiscardHandler)
	}
	if s.bcryptCost < bcrypt.MinCost || s.bcryptCost > bcrypt.MaxCost {
		s.lg.Warn("using the default bcrypt cost instead of an invalid one", "given-cost", opts.BcryptCost, "default-cost", bcrypt.DefaultCost)
		s.bcryptCost = bcrypt.DefaultCost
	}
	st := &state{rev: 1} // as etcd: a new auth store starts at revision 1
	raw, err := r.Get(keyEnabled)
	if err != nil {
		return nil, err
	}
	st.enabled = len(raw) == 1 && raw[0] == 1
	if st.rev, err = getUint(r, keyRevision, 1); err != nil {
		return nil, err
	}
	if st.tokensFrom, err = getUint(r, keyTokensFrom, 0); err != nil {
		return nil, err
	}
	err = r.Scan(prefixRole, func(key string, value []byte) error {
		var pr authpb.Role
		if err := pr.Unmarshal(value); err != nil {
			return fmt.Errorf("auth: decode role %q: %w", key, err)
		}
		s.roles.Store(string(pr.Name), &role{name: string(pr.Name), perms: pr.KeyPermission})
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
		s.users.Store(u.name, s.withPerms(u))
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.st.Store(st)
	return s, nil
}

func getUint(r Reader, key string, def uint64) (uint64, error) {
	raw, err := r.Get(key)
	switch {
	case err != nil:
		return 0, err
	case raw == nil:
		return def, nil
	case len(raw) != 8:
		return 0, fmt.Errorf("auth: %s: bad length %d", key, len(raw))
	}
	return binary.BigEndian.Uint64(raw), nil
}

func encodeUser(u *user) ([]byte, error) {
	pu := authpb.User{Name: []byte(u.name), Password: u.password, Roles: u.roles, Options: &authpb.UserAddOptions{NoPassword: u.noPassword}}
	b := binary.AppendUvarint([]byte{userRecordVersion}, u.credRev)
	body, err := pu.Marshal()
	if err != nil {
		return nil, err
	}
	return append(b, body...), nil
}

func decodeUser(raw []byte) (*user, error) {
	if len(raw) == 0 || raw[0] != userRecordVersion {
		return nil, errors.New("unknown record version")
	}
	credRev, n := binary.Uvarint(raw[1:])
	if n <= 0 {
		return nil, errors.New("bad credential revision")
	}
	var pu authpb.User
	if err := pu.Unmarshal(raw[1+n:]); err != nil {
		return nil, err
	}
	return &user{
		name:       string(pu.Name),
		password:   pu.Password,
		roles:      pu.Roles,
		noPassword: pu.Options != nil && pu.Options.NoPassword,
		credRev:    credRev,
	}, nil
}

// withPerms completes a user with its derived fields from the current roles.
func (s *Store) withPerms(u *user) *user {
	u.root = hasRole(u.roles, RootRole)
	var rs []*role
	for _, name := range u.roles {
		if r, ok := s.roles.Load(name); ok {
			rs = append(rs, r)
		}
	}
	u.perms = newPermSet(rs)
	return u
}

// hasRole searches the sorted roles of a user.
func hasRole(roles []string, name string) bool {
	_, ok := slices.BinarySearch(roles, name)
	return ok
}

// Enabled reports whether authentication is on.
func (s *Store) Enabled() bool { return s.st.Load().enabled }

// Revision is etcd's auth revision: it grows with every change of users,
// roles or permissions and with AuthDisable.
func (s *Store) Revision() uint64 { return s.st.Load().rev }

// Epoch changes with every mutation, AuthEnable included. A reader that
// checked permissions at one epoch and finds another afterwards must check
// again.
func (s *Store) Epoch() uint64 { return s.st.Load().epoch }

// State returns, from one snapshot, whether auth is enabled, the auth
// revision and the epoch.
func (s *Store) State() (enabled bool, rev, epoch uint64) {
	st := s.st.Load()
	return st.enabled, st.rev, st.epoch
}

// Status returns whether auth is enabled and the auth revision.
func (s *Store) Status() (enabled bool, rev uint64) {
	st := s.st.Load()
	return st.enabled, st.rev
}

// Stale reports whether a request authorized when the auth revision was
// authRev (0: auth was disabled) must be authorized again before it is
// applied: auth is on now and has changed since.
func (s *Store) Stale(authRev uint64) bool {
	st := s.st.Load()
	return st.enabled && authRev != st.rev
}

// Authorize is the built-in RBAC: etcd's permission model. With auth
// disabled every request is allowed; it never answers NoOpinion.
func (s *Store) Authorize(_ context.Context, r *Request) (Decision, error) {
	if !s.st.Load().enabled {
		return Allow, nil
	}
	if r.Op == policyabi.OpAdmin {
		if err := s.checkAdmin(r.User); err != nil {
			return Deny, err
		}
		return Allow, nil
	}
	// As etcd: a request that touches no key (an empty txn) needs no user.
	if len(r.Ranges) == 0 {
		return Allow, nil
	}
	if r.User == "" {
		return Deny, ErrUserEmpty
	}
	u, ok := s.users.Load(r.User)
	if !ok {
		return Deny, ErrPermissionDenied
	}
	if u.root {
		return Allow, nil
	}
	for i := range r.Ranges {
		kr := &r.Ranges[i]
		if !u.perms.allows(kr.Perm, kr.Key, kr.End) {
			return Deny, ErrPermissionDenied
		}
	}
	return Allow, nil
}

// IsAdmin is etcd's admin check: nil when auth is off or name holds the
// root role.
func (s *Store) IsAdmin(name string) error {
	if !s.st.Load().enabled {
		return nil
	}
	return s.checkAdmin(name)
}

func (s *Store) checkAdmin(name string) error {
	if name == "" {
		return ErrUserEmpty
	}
	u, ok := s.users.Load(name)
	if !ok {
		return ErrUserNotFound
	}
	if !u.root {
		return ErrPermissionDenied
	}
	return nil
}

// HasRole reports whether user holds role.
func (s *Store) HasRole(name, role string) bool {
	u, ok := s.users.Load(name)
	return ok && hasRole(u.roles, role)
}

// UserRoles returns the roles of a user (sorted), or nil. The slice must not
// be modified.
func (s *Store) UserRoles(name string) []string {
	if u, ok := s.users.Load(name); ok {
		return u.roles
	}
	return nil
}

// tokenValid reports whether a token issued to name at auth revision
// issuedRev is still good: the user exists, its password has not changed
// since, and auth has not been disabled since.
func (s *Store) tokenValid(name string, issuedRev uint64) bool {
	u, ok := s.users.Load(name)
	return ok && issuedRev >= u.credRev && issuedRev >= s.st.Load().tokensFrom
}

// Password handling. bcrypt is slow by design: these run on the caller's
// goroutine and never under a lock.

// HashPassword returns the bcrypt hash of password, base64-encoded as
// AuthUserAddRequest.HashedPassword carries it.
func (s *Store) HashPassword(password string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(password), s.bcryptCost)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(h), nil
}

// BcryptCost returns the cost used for new password hashes.
func (s *Store) BcryptCost() int { return s.bcryptCost }

// CheckPassword verifies a user's password as etcd's does before
// Authenticate; it returns the auth revision the check was made at.
func (s *Store) CheckPassword(name, password string) (uint64, error) {
	st := s.st.Load()
	if !st.enabled {
		return 0, ErrAuthNotEnabled
	}
	u, ok := s.users.Load(name)
	if !ok {
		return 0, ErrAuthFailed
	}
	if u.noPassword {
		return 0, ErrNoPasswordUser
	}
	if bcrypt.CompareHashAndPassword(u.password, []byte(password)) != nil {
		s.lg.Info("invalid password", "user-name", name)
		return 0, ErrAuthFailed
	}
	return st.rev, nil
}

// Reads for the Auth service.

// UserGet returns a user's roles.
func (s *Store) UserGet(r *pb.AuthUserGetRequest) (*pb.AuthUserGetResponse, error) {
	u, ok := s.users.Load(r.Name)
	if !ok {
		return nil, ErrUserNotFound
	}
	return &pb.AuthUserGetResponse{Roles: slices.Clone(u.roles)}, nil
}

// UserList returns every user name in byte order.
func (s *Store) UserList(*pb.AuthUserListRequest) (*pb.AuthUserListResponse, error) {
	names := make([]string, 0, s.users.Size())
	s.users.Range(func(name string, _ *user) bool {
		names = append(names, name)
		return true
	})
	slices.Sort(names)
	return &pb.AuthUserListResponse{Users: names}, nil
}

// RoleGet returns a role's permissions (the root role shows full access).
func (s *Store) RoleGet(r *pb.AuthRoleGetRequest) (*pb.AuthRoleGetResponse, error) {
	ro, ok := s.roles.Load(r.Role)
	if !ok {
		return nil, ErrRoleNotFound
	}
	if ro.name == RootRole {
		p := rootPerm
		return &pb.AuthRoleGetResponse{Perm: []*authpb.Permission{&p}}, nil
	}
	perms := make([]*authpb.Permission, len(ro.perms))
	for i, p := range ro.perms {
		c := *p
		perms[i] = &c
	}
	return &pb.AuthRoleGetResponse{Perm: perms}, nil
}

// RoleList returns every role name in byte order.
func (s *Store) RoleList(*pb.AuthRoleListRequest) (*pb.AuthRoleListResponse, error) {
	names := make([]string, 0, s.roles.Size())
	s.roles.Range(func(name string, _ *role) bool {
		names = append(names, name)
		return true
	})
	slices.Sort(names)
	return &pb.AuthRoleListResponse{Roles: names}, nil
}

// Mutations: etcd's semantics, persisted through w. The caller runs them in
// apply order; they touch no clock and no randomness.

// publish installs the next state. Maps are updated before the state, so a
// reader that sees the new epoch also sees the new users and roles.
func (s *Store) publish(w Writer, next state, bumpRev bool) error {
	if bumpRev {
		next.rev++
		if err := w.Put(keyRevision, binary.BigEndian.AppendUint64(nil, next.rev)); err != nil {
			return err
		}
	}
	next.epoch++
	s.st.Store(&next)
	return nil
}

func (s *Store) putUser(w Writer, u *user) error {
	raw, err := encodeUser(u)
	if err != nil {
		return err
	}
	if err := w.Put(prefixUser+u.name, raw); err != nil {
		return err
	}
	s.users.Store(u.name, s.withPerms(u))
	return nil
}

func (s *Store) putRole(w Writer, r *role) error {
	raw, err := (&authpb.Role{Name: []byte(r.name), KeyPermission: r.perms}).Marshal()
	if err != nil {
		return err
	}
	if err := w.Put(prefixRole+r.name, raw); err != nil {
		return err
	}
	s.roles.Store(r.name, r)
	// Recompute the permissions of every user holding the role.
	var holders []*user
	s.users.Range(func(_ string, u *user) bool {
		if hasRole(u.roles, r.name) {
			holders = append(holders, u)
		}
		return true
	})
	for _, u := range holders {
		c := *u
		s.users.Store(c.name, s.withPerms(&c))
	}
	return nil
}

// AuthEnable turns authentication on; it needs user root holding role root.
func (s *Store) AuthEnable(w Writer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := *s.st.Load()
	if st.enabled {
		return nil
	}
	u, ok := s.users.Load(RootUser)
	if !ok {
		return ErrRootUserNotExist
	}
	if !u.root {
		return ErrRootRoleNotExist
	}
	if err := w.Put(keyEnabled, []byte{1}); err != nil {
		return err
	}
	st.enabled = true
	s.lg.Info("enabled authentication")
	return s.publish(w, st, false)
}

// AuthDisable turns authentication off and voids every token issued so far.
func (s *Store) AuthDisable(w Writer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := *s.st.Load()
	if !st.enabled {
		return nil
	}
	if err := w.Put(keyEnabled, []byte{0}); err != nil {
		return err
	}
	st.enabled = false
	st.tokensFrom = st.rev + 1
	if err := w.Put(keyTokensFrom, binary.BigEndian.AppendUint64(nil, st.tokensFrom)); err != nil {
		return err
	}
	s.lg.Info("disabled authentication")
	return s.publish(w, st, true)
}

// Authenticate is the applied half of etcd's Authenticate (the password was
// checked before): it returns the auth revision the token is issued at.
func (s *Store) Authenticate(name string) (uint64, error) {
	st := s.st.Load()
	if !st.enabled {
		return 0, ErrAuthNotEnabled
	}
	u, ok := s.users.Load(name)
	if !ok || u.noPassword {
		return 0, ErrAuthFailed
	}
	return st.rev, nil
}

// UserAdd adds a user. The password arrives hashed (HashedPassword, see
// HashPassword) unless the user has no password.
func (s *Store) UserAdd(w Writer, r *pb.AuthUserAddRequest) (*pb.AuthUserAddResponse, error) {
	if r.Name == "" {
		return nil, ErrUserEmpty
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.users.Load(r.Name); ok {
		return nil, ErrUserAlreadyExist
	}
	st := *s.st.Load()
	u := &user{name: r.Name, credRev: st.rev + 1}
	if r.Options != nil && r.Options.NoPassword {
		u.noPassword = true
	} else {
		hash, err := decodeHash(r)
		if err != nil {
			return nil, err
		}
		u.password = hash
	}
	if err := s.putUser(w, u); err != nil {
		return nil, err
	}
	s.lg.Info("added a user", "user-name", r.Name)
	return &pb.AuthUserAddResponse{}, s.publish(w, st, true)
}

// decodeHash reads the base64 bcrypt hash of a request. A hash that does not
// decode is etcd's ErrNoPasswordUser.
func decodeHash(r interface{ GetHashedPassword() string }) ([]byte, error) {
	h, err := base64.StdEncoding.DecodeString(r.GetHashedPassword())
	if err != nil {
		return nil, ErrNoPasswordUser
	}
	return h, nil
}

// UserDelete removes a user (never root while auth is enabled).
func (s *Store) UserDelete(w Writer, r *pb.AuthUserDeleteRequest) (*pb.AuthUserDeleteResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := *s.st.Load()
	if st.enabled && r.Name == RootUser {
		return nil, ErrInvalidAuthMgmt
	}
	if _, ok := s.users.Load(r.Name); !ok {
		return nil, ErrUserNotFound
	}
	if err := w.Delete(prefixUser + r.Name); err != nil {
		return nil, err
	}
	s.users.Delete(r.Name)
	s.lg.Info("deleted a user", "user-name", r.Name)
	return &pb.AuthUserDeleteResponse{}, s.publish(w, st, true)
}

// UserChangePassword replaces a user's password hash and voids its tokens.
func (s *Store) UserChangePassword(w Writer, r *pb.AuthUserChangePasswordRequest) (*pb.AuthUserChangePasswordResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.users.Load(r.Name)
	if !ok {
		return nil, ErrUserNotFound
	}
	st := *s.st.Load()
	u := *old
	u.password = nil
	if !old.noPassword {
		hash, err := decodeHash(r)
		if err != nil {
			return nil, err
		}
		u.password = hash
	}
	u.credRev = st.rev + 1
	if err := s.putUser(w, &u); err != nil {
		return nil, err
	}
	s.lg.Info("changed a password of a user", "user-name", r.Name)
	return &pb.AuthUserChangePasswordResponse{}, s.publish(w, st, true)
}

// UserGrantRole grants a role (root needs no role record); granting a role
// the user holds changes nothing.
func (s *Store) UserGrantRole(w Writer, r *pb.AuthUserGrantRoleRequest) (*pb.AuthUserGrantRoleResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.users.Load(r.User)
	if !ok {
		return nil, ErrUserNotFound
	}
	if r.Role != RootRole {
		if _, ok := s.roles.Load(r.Role); !ok {
			return nil, ErrRoleNotFound
		}
	}
	if hasRole(old.roles, r.Role) {
		return &pb.AuthUserGrantRoleResponse{}, nil
	}
	u := *old
	u.roles = append(slices.Clone(old.roles), r.Role)
	slices.Sort(u.roles)
	if err := s.putUser(w, &u); err != nil {
		return nil, err
	}
	s.lg.Info("granted a role to a user", "user-name", r.User, "role-name", r.Role)
	return &pb.AuthUserGrantRoleResponse{}, s.publish(w, *s.st.Load(), true)
}

// UserRevokeRole revokes a role (root keeps root while auth is enabled).
func (s *Store) UserRevokeRole(w Writer, r *pb.AuthUserRevokeRoleRequest) (*pb.AuthUserRevokeRoleResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := *s.st.Load()
	if st.enabled && r.Name == RootUser && r.Role == RootRole {
		return nil, ErrInvalidAuthMgmt
	}
	old, ok := s.users.Load(r.Name)
	if !ok {
		return nil, ErrUserNotFound
	}
	u := *old
	u.roles = slices.DeleteFunc(slices.Clone(old.roles), func(x string) bool { return x == r.Role })
	if len(u.roles) == len(old.roles) {
		return nil, ErrRoleNotGranted
	}
	if err := s.putUser(w, &u); err != nil {
		return nil, err
	}
	s.lg.Info("revoked a role from a user", "user-name", r.Name, "role-name", r.Role)
	return &pb.AuthUserRevokeRoleResponse{}, s.publish(w, st, true)
}

// RoleAdd adds a role without permissions.
func (s *Store) RoleAdd(w Writer, r *pb.AuthRoleAddRequest) (*pb.AuthRoleAddResponse, error) {
	if r.Name == "" {
		return nil, ErrRoleEmpty
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.roles.Load(r.Name); ok {
		return nil, ErrRoleAlreadyExist
	}
	if err := s.putRole(w, &role{name: r.Name}); err != nil {
		return nil, err
	}
	s.lg.Info("created a role", "role-name", r.Name)
	return &pb.AuthRoleAddResponse{}, s.publish(w, *s.st.Load(), true)
}

// RoleDelete removes a role and revokes it from every user (never root while
// auth is enabled).
func (s *Store) RoleDelete(w Writer, r *pb.AuthRoleDeleteRequest) (*pb.AuthRoleDeleteResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := *s.st.Load()
	if st.enabled && r.Role == RootRole {
		return nil, ErrInvalidAuthMgmt
	}
	if _, ok := s.roles.Load(r.Role); !ok {
		return nil, ErrRoleNotFound
	}
	if err := w.Delete(prefixRole + r.Role); err != nil {
		return nil, err
	}
	s.roles.Delete(r.Role)
	var holders []*user
	s.users.Range(func(_ string, u *user) bool {
		if hasRole(u.roles, r.Role) {
			holders = append(holders, u)
		}
		return true
	})
	for _, old := range holders {
		u := *old
		u.roles = slices.DeleteFunc(slices.Clone(old.roles), func(x string) bool { return x == r.Role })
		if err := s.putUser(w, &u); err != nil {
			return nil, err
		}
	}
	s.lg.Info("deleted a role", "role-name", r.Role)
	return &pb.AuthRoleDeleteResponse{}, s.publish(w, st, true)
}

// permsByKey sorts permissions by key only, with the same sort call as etcd
// so that permissions sharing a key end up in etcd's order.
type permsByKey []*authpb.Permission

func (p permsByKey) Len() int           { return len(p) }
func (p permsByKey) Less(i, j int) bool { return bytes.Compare(p[i].Key, p[j].Key) < 0 }
func (p permsByKey) Swap(i, j int)      { p[i], p[j] = p[j], p[i] }

// RoleGrantPermission grants (or changes the type of) a permission on a key
// range.
func (s *Store) RoleGrantPermission(w Writer, r *pb.AuthRoleGrantPermissionRequest) (*pb.AuthRoleGrantPermissionResponse, error) {
	if r.Perm == nil {
		return nil, ErrPermissionNotGiven
	}
	if !validPermissionRange(r.Perm.Key, r.Perm.RangeEnd) {
		return nil, ErrInvalidAuthMgmt
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.roles.Load(r.Name)
	if !ok {
		return nil, ErrRoleNotFound
	}
	perms := make([]*authpb.Permission, len(old.perms))
	for i, p := range old.perms {
		c := *p
		perms[i] = &c
	}
	// As etcd: only the first permission at or after the key is looked at
	// for an exact match.
	idx := sort.Search(len(perms), func(i int) bool { return bytes.Compare(perms[i].Key, r.Perm.Key) >= 0 })
	if idx < len(perms) && bytes.Equal(perms[idx].Key, r.Perm.Key) && bytes.Equal(perms[idx].RangeEnd, r.Perm.RangeEnd) {
		perms[idx].PermType = r.Perm.PermType
	} else {
		perms = append(perms, &authpb.Permission{
			Key:      bytes.Clone(r.Perm.Key),
			RangeEnd: bytes.Clone(r.Perm.RangeEnd),
			PermType: r.Perm.PermType,
		})
		sort.Sort(permsByKey(perms))
	}
	if err := s.putRole(w, &role{name: old.name, perms: perms}); err != nil {
		return nil, err
	}
	s.lg.Info("granted/updated a permission to a role", "role-name", r.Name,
		"permission", authpb.Permission_Type_name[int32(r.Perm.PermType)], "key", string(r.Perm.Key), "range-end", string(r.Perm.RangeEnd))
	return &pb.AuthRoleGrantPermissionResponse{}, s.publish(w, *s.st.Load(), true)
}

// RoleRevokePermission revokes every permission of a role on exactly the
// given key range.
func (s *Store) RoleRevokePermission(w Writer, r *pb.AuthRoleRevokePermissionRequest) (*pb.AuthRoleRevokePermissionResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.roles.Load(r.Role)
	if !ok {
		return nil, ErrRoleNotFound
	}
	var perms []*authpb.Permission
	for _, p := range old.perms {
		if !bytes.Equal(p.Key, r.Key) || !bytes.Equal(p.RangeEnd, r.RangeEnd) {
			perms = append(perms, p)
		}
	}
	if len(perms) == len(old.perms) {
		return nil, ErrPermissionNotGranted
	}
	if err := s.putRole(w, &role{name: old.name, perms: perms}); err != nil {
		return nil, err
	}
	s.lg.Info("revoked a permission on range", "role-name", r.Role, "key", string(r.Key), "range-end", string(r.RangeEnd))
	return &pb.AuthRoleRevokePermissionResponse{}, s.publish(w, *s.st.Load(), true)
}

// String summarises the store for logs.
func (s *Store) String() string {
	st := s.st.Load()
	return fmt.Sprintf("auth{enabled=%v rev=%d users=%d roles=%d}", st.enabled, st.rev, s.users.Size(), s.roles.Size())
}

// Reload replaces the users, roles and switch with those persisted in r,
// after the store under them was replaced (a Raft snapshot installed on
// this member). Tokens issued before stay valid only if the new state's
// revision says so, as at any other auth change.
func (s *Store) Reload(r Reader) error {
	fresh, err := Open(r, Options{BcryptCost: s.bcryptCost, Logger: s.lg})
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// NB: new entries are stored before stale ones go, so a reader never
	// sees a user or role missing that both states have.
	fresh.users.Range(func(k string, v *user) bool { s.users.Store(k, v); return true })
	fresh.roles.Range(func(k string, v *role) bool { s.roles.Store(k, v); return true })
	s.users.Range(func(k string, _ *user) bool {
		if _, ok := fresh.users.Load(k); !ok {
			s.users.Delete(k)
		}
		return true
	})
	s.roles.Range(func(k string, _ *role) bool {
		if _, ok := fresh.roles.Load(k); !ok {
			s.roles.Delete(k)
		}
		return true
	})
	next := *fresh.st.Load()
	next.epoch = s.st.Load().epoch + 1
	s.st.Store(&next)
	return nil
}
