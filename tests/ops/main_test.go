// Package ops tests metastore's operational features from outside, with the
// real etcd client: TLS and mTLS, connection and rate limits, the NOSPACE
// quota cycle, metrics, defragmentation under load and graceful shutdown.
// These are metastore settings (etcd has no connection or rate limits), so
// the scenarios run against metastore alone. See README.md in tests/.
package ops

import (
	"os"
	"testing"

	"github.com/metastore-dev/metastore/tests/framework"
)

func TestMain(m *testing.M) { os.Exit(framework.Main(m)) }
