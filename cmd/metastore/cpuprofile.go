package main

import (
	"fmt"
	"io"
	"os"
	"runtime/pprof"
)

// cpuProfileEnv names the file a CPU profile of the whole run is written to
// (the server's run, from start to exit). It is how the profiles in
// docs/benchmarks.md were taken under etcd's benchmark tool; a default.pgo
// for profile-guided optimisation would be made the same way.
const cpuProfileEnv = "CPUPROFILE_PATH"

// startCPUProfile starts the CPU profile named by getenv(cpuProfileEnv), if
// any, and returns the function that stops it and closes the file. A file
// that cannot be written is reported on stderr and the server runs without.
func startCPUProfile(getenv func(string) string, stderr io.Writer) (stop func()) {
	path := getenv(cpuProfileEnv)
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		if err = pprof.StartCPUProfile(f); err != nil {
			f.Close()
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "metastore: %s: no CPU profile: %v\n", cpuProfileEnv, err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}
