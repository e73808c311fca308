package cluster

import (
	"os"
	"strconv"
	"testing"

	"github.com/metastore-dev/metastore/tests/framework"
)

func TestMain(m *testing.M) { os.Exit(framework.Main(m)) }

// soak reports whether the long forms run (METASTORE_SOAK, make soak and
// make soak-cluster).
func soak() bool {
	v := os.Getenv("METASTORE_SOAK")
	return v != "" && v != "0"
}

// envInt returns the integer in environment variable name, or def.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return n
}
