package h2grpc

import (
	"encoding/base64"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// decodeTimeout parses a grpc-timeout value: at most 8 digits and a unit.
func decodeTimeout(s string) (time.Duration, error) {
	n := len(s)
	if n < 2 {
		return 0, fmt.Errorf("transport: timeout string is too short: %q", s)
	}
	if n > 9 {
		return 0, fmt.Errorf("transport: timeout string is too long: %q", s)
	}
	var unit time.Duration
	switch s[n-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, fmt.Errorf("transport: timeout unit is not recognized: %q", s)
	}
	v, err := strconv.ParseUint(s[:n-1], 10, 64)
	if err != nil {
		return 0, err
	}
	if unit == time.Hour && v > uint64(math.MaxInt64/int64(time.Hour)) {
		return time.Duration(math.MaxInt64), nil
	}
	return unit * time.Duration(v), nil
}

// encodeMessage percent-encodes a grpc-message value as gRPC specifies:
// printable ASCII but '%' stays, every other byte of the UTF-8 encoding is
// %XX; a byte that is not UTF-8 is sent as U+FFFD.
func encodeMessage(msg string) string {
	plain := true
	for i := 0; i < len(msg); i++ {
		if c := msg[i]; c < ' ' || c > '~' || c == '%' {
			plain = false
			break
		}
	}
	if plain {
		return msg
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	var rb [utf8.UTFMax]byte
	for len(msg) > 0 {
		r, size := utf8.DecodeRuneInString(msg)
		msg = msg[size:]
		if size == 1 && r != utf8.RuneError && r >= ' ' && r <= '~' && r != '%' {
			b.WriteByte(byte(r))
			continue
		}
		n := utf8.EncodeRune(rb[:], r)
		for _, c := range rb[:n] {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
	return b.String()
}

// isReserved reports headers gRPC keeps out of the metadata a handler
// sees (pseudo-headers and the protocol's own), as grpc-go does;
// :authority and user-agent are passed on all the same.
func isReserved(name string) bool {
	if name != "" && name[0] == ':' {
		return name != ":authority"
	}
	switch name {
	case "grpc-message-type", "grpc-encoding", "grpc-message", "grpc-status", "grpc-timeout", "te":
		return true
	}
	return false
}

// isReservedOut reports headers a handler's metadata may not set on a
// response.
func isReservedOut(name string) bool {
	if name != "" && name[0] == ':' {
		return true
	}
	switch name {
	case "content-type", "user-agent", "grpc-message-type", "grpc-encoding", "grpc-message",
		"grpc-status", "grpc-timeout", "te":
		return true
	}
	return false
}

// decodeBin decodes a -bin metadata value; senders may pad or not.
func decodeBin(v string) (string, error) {
	if len(v)%4 == 0 {
		b, err := base64.StdEncoding.DecodeString(v)
		return string(b), err
	}
	b, err := base64.RawStdEncoding.DecodeString(v)
	return string(b), err
}

func encodeBin(v string) string { return base64.RawStdEncoding.EncodeToString([]byte(v)) }
