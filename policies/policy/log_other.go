//go:build !wasip1

package policy

import (
	"fmt"
	"os"
)

// LogOutput receives log lines when the policy runs natively (tests); nil
// writes them to stderr.
var LogOutput func(level int32, msg string)

func writeLog(level int32, msg string) {
	if LogOutput != nil {
		LogOutput(level, msg)
		return
	}
	fmt.Fprintf(os.Stderr, "policy log [%d]: %s\n", level, msg)
}
