// Command echo is a test policy for the corpus test of policycmd: for user
// "echo" it denies with the request it received written out (op, flags,
// revision, user, ranges), so a test can compare what two callers sent;
// root (and anyone while auth is disabled) is allowed everything; any other user is allowed a request whose
// every range starts with "/ok/" and denied otherwise.
package main

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/metastore-dev/metastore/policies/policy"
)

func init() { policy.HandleAuthorize(authorize) }

func authorize(r *policy.Request) policy.Result {
	switch string(r.User()) {
	case "root", "": // root, and anyone while auth is off
		return policy.Allow()
	case "echo":
		var b strings.Builder
		fmt.Fprintf(&b, "op=%d flags=%d rev=%d user=%q", r.Op(), r.Flags(), r.Revision(), r.User())
		for _, rg := range r.Ranges() {
			fmt.Fprintf(&b, " %d[%q,%q)", rg.Perm, rg.Key, rg.End)
		}
		return policy.Deny(b.String())
	}
	for _, rg := range r.Ranges() {
		if !bytes.HasPrefix(rg.Key, []byte("/ok/")) {
			return policy.Deny("outside /ok/")
		}
	}
	return policy.Allow()
}

func main() {}
