package wasmhost

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/metastore-dev/metastore/wasmhost/wasmtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	wasmtest.Cleanup()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			os.Stderr.WriteString("goleak: " + err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}
