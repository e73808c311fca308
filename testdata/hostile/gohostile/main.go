// Command gohostile is a hostile guest written with the Go SDK: its
// "mode" setting picks the misbehaviour of every call, so one build covers
// what a real Go policy can do wrong. wasmhost's tests prove each contained.
//
// Modes: loop (spins forever), panic (a Go panic), oom (allocates until the
// memory limit), exit (calls os.Exit), garbage (returns verdict 42),
// bigreason (a reason over the limit), bigmutation (a mutation over the
// limit), log (logs a line and allows), sandbox (denies with a reason that
// reports what the guest can see of the host: files, environment,
// arguments, clock, network), random (reads 1 MiB of randomness per
// iteration, forever), stderr (writes 1 MiB to stderr per iteration,
// forever), sleep (sleeps an hour at a time, forever), ok (allows; the
// control). Every instance logs its mode at init.
package main

import (
	"crypto/rand"
	"encoding/json"
	"net"
	"os"
	"strings"
	"time"

	"github.com/metastore-dev/metastore/policies/policy"
)

var (
	mode string
	sink [][]byte
)

func init() {
	policy.HandleInit(func(raw []byte) error {
		var s struct {
			Mode string `json:"mode"`
		}
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
		mode = s.Mode
		policy.Logf(policy.LevelInfo, "gohostile mode=%s", mode)
		return nil
	})
	policy.HandleAuthorize(func(*policy.Request) policy.Result { return misbehave() })
	policy.HandleAdmit(func(*policy.Request, policy.Admission) policy.Result { return misbehave() })
}

func misbehave() policy.Result {
	switch mode {
	case "loop":
		n := 0
		for {
			n++
		}
	case "panic":
		var m map[string]int
		m["boom"]++ // nil map write
	case "oom":
		for {
			sink = append(sink, make([]byte, 1<<20))
		}
	case "exit":
		os.Exit(3)
	case "random":
		buf := make([]byte, 1<<20)
		for {
			rand.Read(buf)
		}
	case "stderr":
		buf := make([]byte, 1<<20)
		for {
			os.Stderr.Write(buf)
		}
	case "sleep":
		for {
			time.Sleep(time.Hour)
		}
	case "sandbox":
		_, fsErr := os.ReadFile("/etc/hostname")
		_, dirErr := os.ReadDir(".")
		_, netErr := net.Dial("tcp", "127.0.0.1:2379")
		return policy.Denyf("fs=%v dir=%v env=%d args=%d year=%d net=%v",
			fsErr == nil, dirErr == nil, len(os.Environ()), len(os.Args), time.Now().Year(), netErr == nil)
	case "log":
		policy.Log(policy.LevelWarn, "gohostile was called")
	case "garbage":
		return policy.Result{Verdict: 42}
	case "bigreason":
		return policy.Deny(strings.Repeat("r", 64<<10))
	case "bigmutation":
		return policy.Mutate(make([]byte, 4<<20))
	}
	return policy.Allow()
}

func main() {}
