package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// fakeClock is a settable clock.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// issue authenticates user as the server does: the store fixes the
// revision, Tokens issues the token.
func issue(t *testing.T, s *Store, tk *Tokens, user string) string {
	t.Helper()
	rev, err := s.Authenticate(user)
	if err != nil {
		t.Fatal(err)
	}
	prefix := ""
	if tk.Simple() {
		prefix = must(NewSimpleTokenPrefix())
	}
	return must(tk.Issue(user, rev, SimpleToken(prefix, int64(rev))))
}

func wantResolve(t *testing.T, tk *Tokens, tok, user string, wantErr error) {
	t.Helper()
	got, err := tk.Resolve(tok)
	if !errors.Is(err, wantErr) || (err == nil && got != user) {
		t.Fatalf("Resolve = %q, %v; want %q, %v", got, err, user, wantErr)
	}
}

func TestSimpleTokens(t *testing.T) {
	b := newMemBackend()
	s := setupStore(t, b)
	clk := newFakeClock()
	tk := NewTokens(s, TokenOptions{TTL: 10 * time.Second, Now: clk.now})
	defer tk.Close()

	tok := issue(t, s, tk, "alice")
	if parts := strings.Split(tok, "."); len(parts) != 2 || len(parts[0]) != simpleTokenLen {
		t.Fatalf("token %q is not etcd's <16 letters>.<n>", tok)
	}
	wantResolve(t, tk, tok, "alice", nil)
	wantResolve(t, tk, "nonsense", "", ErrInvalidAuthToken)
	wantResolve(t, tk, tok+"x", "", ErrInvalidAuthToken)

	// The TTL slides with use, as etcd's.
	clk.advance(8 * time.Second)
	wantResolve(t, tk, tok, "alice", nil)
	clk.advance(8 * time.Second)
	wantResolve(t, tk, tok, "alice", nil)
	clk.advance(11 * time.Second)
	wantResolve(t, tk, tok, "", ErrInvalidAuthToken)

	// Unrelated auth changes leave a token valid.
	tok = issue(t, s, tk, "alice")
	must(s.RoleAdd(b, &pb.AuthRoleAddRequest{Name: "other"}))
	must(s.UserAdd(b, &pb.AuthUserAddRequest{Name: "bob", HashedPassword: hashed(t, s, "x")}))
	must(s.UserChangePassword(b, &pb.AuthUserChangePasswordRequest{Name: "bob", HashedPassword: hashed(t, s, "y")}))
	must(s.UserRevokeRole(b, &pb.AuthUserRevokeRoleRequest{Name: "alice", Role: "ra"}))
	wantResolve(t, tk, tok, "alice", nil)

	// A password change voids the user's tokens, and so does a deletion
	// (even if the user is added again).
	must(s.UserChangePassword(b, &pb.AuthUserChangePasswordRequest{Name: "alice", HashedPassword: hashed(t, s, "new")}))
	wantResolve(t, tk, tok, "", ErrInvalidAuthToken)
	tok = issue(t, s, tk, "alice")
	must(s.UserDelete(b, &pb.AuthUserDeleteRequest{Name: "alice"}))
	must(s.UserAdd(b, &pb.AuthUserAddRequest{Name: "alice", HashedPassword: hashed(t, s, "alicepw")}))
	wantResolve(t, tk, tok, "", ErrInvalidAuthToken)

	// Disabling auth voids every token.
	tok = issue(t, s, tk, "root")
	ok(t, s.AuthDisable(b))
	ok(t, s.AuthEnable(b))
	wantResolve(t, tk, tok, "", ErrInvalidAuthToken)

	// A token issued twice is refused (a new prefix is needed).
	if _, err := tk.Issue("root", 100, "same.1"); err != nil {
		t.Fatal(err)
	}
	if _, err := tk.Issue("alice", 100, "same.1"); !ErrTokenCollision(err) {
		t.Fatalf("reissue: %v, want a collision", err)
	}
}

func TestSimpleTokenSweep(t *testing.T) {
	s := newTestStore(t)
	clk := newFakeClock()
	tk := NewTokens(s, TokenOptions{TTL: time.Second, Now: clk.now, SweepInterval: time.Millisecond})
	defer tk.Close()
	for range 10 {
		issue(t, s, tk, "alice")
	}
	if tk.Size() != 10 {
		t.Fatalf("size = %d", tk.Size())
	}
	clk.advance(2 * time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for tk.Size() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("expired tokens not swept: %d left", tk.Size())
		}
		time.Sleep(time.Millisecond)
	}
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func TestJWTKeys(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecPriv := pemBlock("EC PRIVATE KEY", must(x509.MarshalECPrivateKey(ec)))
	ecPub := pemBlock("PUBLIC KEY", must(x509.MarshalPKIXPublicKey(&ec.PublicKey)))
	ec2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec2Pub := pemBlock("PUBLIC KEY", must(x509.MarshalPKIXPublicKey(&ec2.PublicKey)))
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsaPriv := pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk))
	_, edk, _ := ed25519.GenerateKey(rand.Reader)
	edPriv := pemBlock("PRIVATE KEY", must(x509.MarshalPKCS8PrivateKey(edk)))

	for _, c := range []struct {
		name       string
		method     string
		pub, priv  []byte
		want       error
		verifyOnly bool
	}{
		{"es256 pair", "ES256", ecPub, ecPriv, nil, false},
		{"es256 private only", "ES256", nil, ecPriv, nil, false},
		{"es256 public only", "ES256", ecPub, nil, nil, true},
		{"es256 mismatch", "ES256", ec2Pub, ecPriv, ErrKeyMismatch, false},
		{"rs256", "RS256", nil, rsaPriv, nil, false},
		{"ps256", "PS256", nil, rsaPriv, nil, false},
		{"eddsa", "EdDSA", nil, edPriv, nil, false},
		{"hs256", "HS256", nil, []byte("secret"), nil, false},
		{"hs256 without secret", "HS256", nil, nil, ErrMissingKey, false},
		{"no keys", "RS256", nil, nil, ErrMissingKey, false},
		{"unknown method", "XX999", nil, nil, ErrInvalidAuthMethod, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			o, err := NewJWTOptions(c.method, c.pub, c.priv, time.Minute)
			if !errors.Is(err, c.want) {
				t.Fatalf("NewJWTOptions: %v, want %v", err, c.want)
			}
			if err != nil {
				return
			}
			s := newTestStore(t)
			tk := NewTokens(s, TokenOptions{JWT: o})
			defer tk.Close()
			rev, _ := s.Authenticate("alice")
			tok, err := tk.Issue("alice", rev, "")
			if c.verifyOnly {
				if !errors.Is(err, ErrVerifyOnly) {
					t.Fatalf("Issue with a public key only: %v, want ErrVerifyOnly", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			wantResolve(t, tk, tok, "alice", nil)
			wantResolve(t, tk, tok, "alice", nil) // cached
		})
	}
}

func TestJWTTokens(t *testing.T) {
	b := newMemBackend()
	s := setupStore(t, b)
	clk := newFakeClock()
	o := must(NewJWTOptions("HS256", nil, []byte("secret"), 10*time.Second))
	tk := NewTokens(s, TokenOptions{JWT: o, Now: clk.now})
	defer tk.Close()
	other := NewTokens(s, TokenOptions{JWT: must(NewJWTOptions("HS256", nil, []byte("other"), 0)), Now: clk.now})
	defer other.Close()
	es := NewTokens(s, TokenOptions{JWT: must(NewJWTOptions("HS512", nil, []byte("secret"), 0)), Now: clk.now})
	defer es.Close()

	tok := issue(t, s, tk, "alice")
	wantResolve(t, tk, tok, "alice", nil)
	// Another key or another algorithm does not verify it.
	wantResolve(t, other, tok, "", ErrInvalidAuthToken)
	wantResolve(t, es, tok, "", ErrInvalidAuthToken)
	wantResolve(t, tk, "a.b.c", "", ErrInvalidAuthToken)

	// Unrelated changes leave it valid: etcd would answer ErrAuthOldRevision
	// (etcd-io/etcd#13976).
	must(s.RoleAdd(b, &pb.AuthRoleAddRequest{Name: "other"}))
	must(s.UserRevokeRole(b, &pb.AuthUserRevokeRoleRequest{Name: "alice", Role: "ra"}))
	wantResolve(t, tk, tok, "alice", nil)

	// It expires at its exp claim, cached or not.
	clk.advance(11 * time.Second)
	wantResolve(t, tk, tok, "", ErrInvalidAuthToken)

	// A password change makes older tokens old, as etcd says it.
	tok = issue(t, s, tk, "alice")
	must(s.UserChangePassword(b, &pb.AuthUserChangePasswordRequest{Name: "alice", HashedPassword: hashed(t, s, "new")}))
	wantResolve(t, tk, tok, "", ErrAuthOldRevision)
	tok = issue(t, s, tk, "alice")
	ok(t, s.AuthDisable(b))
	ok(t, s.AuthEnable(b))
	wantResolve(t, tk, tok, "", ErrAuthOldRevision)
}

func TestResolveAllocs(t *testing.T) {
	s := newTestStore(t)
	tk := NewTokens(s, TokenOptions{})
	defer tk.Close()
	tok := issue(t, s, tk, "alice")
	if n := testing.AllocsPerRun(1000, func() { tk.Resolve(tok) }); n != 0 {
		t.Errorf("Resolve allocates %v times per call, want 0", n)
	}
}

func BenchmarkResolveSimple(b *testing.B) {
	s := newTestStore(b)
	tk := NewTokens(s, TokenOptions{})
	defer tk.Close()
	rev, _ := s.Authenticate("alice")
	tok := must(tk.Issue("alice", rev, SimpleToken(must(NewSimpleTokenPrefix()), 1)))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tk.Resolve(tok)
		}
	})
}
