package reliability

import (
	"os"
	"strconv"
	"testing"

	"github.com/metastore-dev/metastore/tests/framework"
)

func TestMain(m *testing.M) { os.Exit(framework.Main(m)) }

// SoakEnv selects the long forms of the reliability tests (make soak).
const SoakEnv = "METASTORE_SOAK"

func soak() bool {
	v := os.Getenv(SoakEnv)
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
