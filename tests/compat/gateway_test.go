package compat

import (
	"fmt"
	"testing"

	"github.com/metastore-dev/metastore/tests/framework"
)

// The JSON gateway (/v3/...) as etcd 3.6 serves it, request for request
// against the reference etcd: status codes, bodies (bytes fields base64,
// int64 as strings, zero values omitted, errors as {"code","message"}),
// streams one JSON object a line.

func TestGatewayKV(t *testing.T) {
	runGatewayScenario(t, framework.Options{}, func(g *gwEnv) {
		put := func(label, k, v, extra string) map[string]any {
			return g.post(label, "/v3/kv/put", fmt.Sprintf(`{"key":%q,"value":%q%s}`, b64(k), b64(v), extra))
		}
		put("put k1", "k1", "v1", "")
		put("put k2 prev_kv", "k2", "v2", `,"prev_kv":true`)
		put("put k1 again prev_kv", "k1", "v1b", `,"prev_kv":true`)
		put("put k3 ignore_value (no key)", "k3", "", `,"ignore_value":true`)
		put("put empty key", "", "x", "")
		g.post("range k1", "/v3/kv/range", fmt.Sprintf(`{"key":%q}`, b64("k1")))
		g.post("range prefix", "/v3/kv/range", fmt.Sprintf(`{"key":%q,"range_end":%q}`, b64("k"), b64("l")))
		g.post("range count_only", "/v3/kv/range", fmt.Sprintf(`{"key":%q,"range_end":%q,"count_only":true}`, b64("k"), b64("l")))
		g.post("range keys_only limit", "/v3/kv/range", fmt.Sprintf(`{"key":%q,"range_end":%q,"keys_only":true,"limit":1}`, b64("k"), b64("l")))
		g.post("range sorted desc", "/v3/kv/range", fmt.Sprintf(`{"key":%q,"range_end":%q,"sort_order":"DESCEND","sort_target":"MOD"}`, b64("k"), b64("l")))
		g.post("range sort by number", "/v3/kv/range", fmt.Sprintf(`{"key":%q,"range_end":%q,"sort_order":2}`, b64("k"), b64("l")))
		g.post("range missing", "/v3/kv/range", fmt.Sprintf(`{"key":%q}`, b64("nope")))
		g.post("range at revision 2", "/v3/kv/range", fmt.Sprintf(`{"key":%q,"revision":"2"}`, b64("k1")))
		g.post("range future revision", "/v3/kv/range", fmt.Sprintf(`{"key":%q,"revision":100}`, b64("k1")))
		g.post("range all from-key", "/v3/kv/range", fmt.Sprintf(`{"key":%q,"range_end":%q}`, b64("\x00"), b64("\x00")))
		g.post("range unknown field", "/v3/kv/range", fmt.Sprintf(`{"key":%q,"no_such_field":1}`, b64("k1")))
		g.post("range bad json", "/v3/kv/range", `{"key":`)
		g.post("range key not base64", "/v3/kv/range", `{"key":"***"}`)
		g.post("range empty body", "/v3/kv/range", ``)
		g.post("delete k2 prev_kv", "/v3/kv/deleterange", fmt.Sprintf(`{"key":%q,"prev_kv":true}`, b64("k2")))
		g.post("delete missing", "/v3/kv/deleterange", fmt.Sprintf(`{"key":%q}`, b64("k2")))

		g.post("txn value compare succeeds", "/v3/kv/txn", fmt.Sprintf(`{
			"compare":[{"key":%q,"target":"VALUE","result":"EQUAL","value":%q}],
			"success":[{"request_put":{"key":%q,"value":%q}},{"request_range":{"key":%q}}],
			"failure":[{"request_delete_range":{"key":%q}}]}`,
			b64("k1"), b64("v1b"), b64("k4"), b64("v4"), b64("k1"), b64("k1")))
		g.post("txn version compare fails", "/v3/kv/txn", fmt.Sprintf(`{
			"compare":[{"key":%q,"target":"VERSION","result":"GREATER","version":5}],
			"success":[{"request_put":{"key":%q,"value":%q}}],
			"failure":[{"request_range":{"key":%q,"range_end":%q}},{"request_delete_range":{"key":%q,"prev_kv":true}}]}`,
			b64("k1"), b64("k1"), b64("x"), b64("k"), b64("l"), b64("k4")))
		g.post("txn nested", "/v3/kv/txn", fmt.Sprintf(`{
			"success":[{"request_txn":{"compare":[{"key":%q,"target":"CREATE","result":"EQUAL","create_revision":"0"}],
			"success":[{"request_put":{"key":%q,"value":%q}}]}}]}`,
			b64("k5"), b64("k5"), b64("v5")))
		g.post("txn empty", "/v3/kv/txn", `{}`)
		g.post("txn duplicate key", "/v3/kv/txn", fmt.Sprintf(`{
			"success":[{"request_put":{"key":%q,"value":%q}},{"request_put":{"key":%q,"value":%q}}]}`,
			b64("k6"), b64("a"), b64("k6"), b64("b")))
		g.post("txn lease not found", "/v3/kv/txn", fmt.Sprintf(`{
			"success":[{"request_put":{"key":%q,"value":%q,"lease":"12345"}}]}`, b64("k7"), b64("a")))

		g.post("compact 3", "/v3/kv/compaction", `{"revision":3}`)
		g.post("compact 3 again", "/v3/kv/compaction", `{"revision":"3","physical":true}`)
		g.post("compact future", "/v3/kv/compaction", `{"revision":1000}`)
		g.post("range compacted", "/v3/kv/range", fmt.Sprintf(`{"key":%q,"revision":2}`, b64("k1")))
		g.post("v3beta prefix", "/v3beta/kv/range", fmt.Sprintf(`{"key":%q}`, b64("k1")))
	})
}
