package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// JWTOptions are the settings of etcd's
// --auth-token=jwt,pub-key=…,priv-key=…,sign-method=…,ttl=…; build them with
// NewJWTOptions.
type JWTOptions struct {
	keys *jwtKeys
}

type jwtKeys struct {
	method     jwt.SigningMethod
	signKey    any // private key, or the HMAC secret
	verifyKey  any // public key, or the HMAC secret
	verifyOnly bool
	ttl        time.Duration
}

// DefaultJWTTTL is a JWT's lifetime when the options name none (etcd's).
const DefaultJWTTTL = 5 * time.Minute

// NewJWTOptions parses the signing method and PEM keys as etcd does: HS*
// takes the secret as priv-key; RS*/PS*/ES*/EdDSA take a private key, a
// public key or both (which must match); with only a public key tokens can
// be verified but not issued. ttl <= 0 means DefaultJWTTTL.
func NewJWTOptions(signMethod string, pubPEM, privPEM []byte, ttl time.Duration) (*JWTOptions, error) {
	m := jwt.GetSigningMethod(signMethod)
	if m == nil {
		return nil, ErrInvalidAuthMethod
	}
	if ttl <= 0 {
		ttl = DefaultJWTTTL
	}
	k := &jwtKeys{method: m, ttl: ttl}
	var err error
	switch m.(type) {
	case *jwt.SigningMethodHMAC:
		if len(privPEM) == 0 {
			return nil, ErrMissingKey
		}
		k.signKey, k.verifyKey = privPEM, privPEM
	case *jwt.SigningMethodRSA, *jwt.SigningMethodRSAPSS:
		err = k.loadPair(pubPEM, privPEM,
			func(b []byte) (crypto.PrivateKey, error) { return jwt.ParseRSAPrivateKeyFromPEM(b) },
			func(b []byte) (crypto.PublicKey, error) { return jwt.ParseRSAPublicKeyFromPEM(b) })
	case *jwt.SigningMethodECDSA:
		err = k.loadPair(pubPEM, privPEM,
			func(b []byte) (crypto.PrivateKey, error) { return jwt.ParseECPrivateKeyFromPEM(b) },
			func(b []byte) (crypto.PublicKey, error) { return jwt.ParseECPublicKeyFromPEM(b) })
	case *jwt.SigningMethodEd25519:
		err = k.loadPair(pubPEM, privPEM, jwt.ParseEdPrivateKeyFromPEM, jwt.ParseEdPublicKeyFromPEM)
	default:
		return nil, fmt.Errorf("auth: unsupported signing method %s", signMethod)
	}
	if err != nil {
		return nil, err
	}
	return &JWTOptions{keys: k}, nil
}

type publicKeyer interface {
	Public() crypto.PublicKey
}

type equaler interface {
	Equal(crypto.PublicKey) bool
}

func (k *jwtKeys) loadPair(pubPEM, privPEM []byte, parsePriv func([]byte) (crypto.PrivateKey, error), parsePub func([]byte) (crypto.PublicKey, error)) error {
	var priv crypto.PrivateKey
	var pub crypto.PublicKey
	var err error
	if len(privPEM) > 0 {
		if priv, err = parsePriv(privPEM); err != nil {
			return err
		}
	}
	if len(pubPEM) > 0 {
		if pub, err = parsePub(pubPEM); err != nil {
			return err
		}
	}
	switch {
	case priv == nil && pub == nil:
		return ErrMissingKey
	case priv == nil:
		k.verifyKey, k.verifyOnly = pub, true
		return nil
	}
	derived := priv.(publicKeyer).Public()
	if pub != nil && !pub.(equaler).Equal(derived) {
		return ErrKeyMismatch
	}
	k.signKey, k.verifyKey = priv, derived
	return nil
}

var (
	_ publicKeyer = (*rsa.PrivateKey)(nil)
	_ publicKeyer = (*ecdsa.PrivateKey)(nil)
	_ publicKeyer = ed25519.PrivateKey(nil)
	_ equaler     = (*rsa.PublicKey)(nil)
	_ equaler     = (*ecdsa.PublicKey)(nil)
	_ equaler     = ed25519.PublicKey(nil)
)
