package server

import (
	"os"
	"testing"

	"github.com/metastore-dev/metastore/wasmhost/wasmtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	wasmtest.Cleanup() // the Go policies built for the benchmarks
	os.Exit(code)
}
