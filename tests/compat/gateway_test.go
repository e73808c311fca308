package compat

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
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

func TestGatewayLease(t *testing.T) {
	runGatewayScenario(t, framework.Options{}, func(g *gwEnv) {
		g.post("grant with id", "/v3/lease/grant", `{"TTL":60,"ID":1000}`)
		g.post("grant same id", "/v3/lease/grant", `{"TTL":60,"ID":"1000"}`)
		g.post("grant below min TTL", "/v3/lease/grant", `{"TTL":1,"ID":1002}`)
		g.post("revoke min-TTL lease", "/v3/lease/revoke", `{"ID":1002}`)
		g.post("grant another", "/v3/lease/grant", `{"TTL":60,"ID":1001}`)
		g.post("grant too large TTL", "/v3/lease/grant", `{"TTL":9000000001,"ID":1003}`)
		g.post("put with lease", "/v3/kv/put", fmt.Sprintf(`{"key":%q,"value":%q,"lease":1000}`, b64("lk"), b64("v")))
		g.post("put with unknown lease", "/v3/kv/put", fmt.Sprintf(`{"key":%q,"value":%q,"lease":7}`, b64("lk2"), b64("v")))
		// The remaining TTL depends on when the second turns.
		g.post("timetolive keys", "/v3/lease/timetolive", `{"ID":1000,"keys":true}`, "TTL")
		g.post("timetolive unknown", "/v3/lease/timetolive", `{"ID":99}`)
		g.post("keepalive", "/v3/lease/keepalive", `{"ID":1000}`)
		g.post("keepalive twice in one stream", "/v3/lease/keepalive", `{"ID":1000} {"ID":1001}`)
		g.post("keepalive unknown", "/v3/lease/keepalive", `{"ID":99}`)
		g.post("leases", "/v3/lease/leases", `{}`)
		g.post("revoke", "/v3/lease/revoke", `{"ID":1000}`)
		g.post("key gone with its lease", "/v3/kv/range", fmt.Sprintf(`{"key":%q}`, b64("lk")))
		g.post("revoke again", "/v3/lease/revoke", `{"ID":1000}`)
		g.post("timetolive revoked", "/v3/lease/timetolive", `{"ID":1000}`)
		// The deprecated paths etcd's gateway still maps.
		g.post("kv/lease/timetolive", "/v3/kv/lease/timetolive", `{"ID":1001}`, "TTL")
		g.post("kv/lease/leases", "/v3/kv/lease/leases", `{}`)
		g.post("kv/lease/revoke", "/v3/kv/lease/revoke", `{"ID":1001}`)
	})
}

func TestGatewayWatch(t *testing.T) {
	runGatewayScenario(t, framework.Options{}, func(g *gwEnv) {
		put := func(k, v string) {
			g.post("put "+k, "/v3/kv/put", fmt.Sprintf(`{"key":%q,"value":%q}`, b64(k), b64(v)))
		}
		put("w/a", "1") // revision 2
		put("w/b", "2") // revision 3
		w := g.openStream("watch w/ prefix", "/v3/watch", fmt.Sprintf(`{"create_request":{"key":%q,"range_end":%q,"prev_kv":true}}`, b64("w/"), b64("w0")))
		w.next() // created
		put("w/a", "3")
		w.next()
		g.post("delete w/b", "/v3/kv/deleterange", fmt.Sprintf(`{"key":%q}`, b64("w/b")))
		w.next()
		put("other", "x")
		put("w/c", "4")
		w.next()

		h := g.openStream("watch history", "/v3/watch", fmt.Sprintf(`{"create_request":{"key":%q,"range_end":%q,"start_revision":2,"watch_id":7,"filters":["NODELETE"]}}`, b64("w/"), b64("w0")))
		h.next() // created
		h.next() // the history

		g.post("compact", "/v3/kv/compaction", fmt.Sprintf(`{"revision":%d}`, 5))
		c := g.openStream("watch compacted", "/v3/watch", fmt.Sprintf(`{"create_request":{"key":%q,"start_revision":2}}`, b64("w/a")))
		c.next() // created
		c.next() // canceled with compact_revision

		// Over a websocket (etcd wraps the gateway in wsproxy), a stream is
		// interactive: each message is one request, each answer one message.
		ws := g.openWebsocket("websocket watch", "/v3/watch")
		ws.send(fmt.Sprintf(`{"create_request":{"key":%q,"range_end":%q}}`, b64("w/"), b64("w0")))
		ws.next() // created
		ws.send(`{"progress_request":{}}`)
		ws.next() // progress, watch_id -1
		put("w/d", "5")
		ws.next()
		ws.send(`{"cancel_request":{}}`)
		ws.next() // canceled

	})
}

func TestGatewayAuth(t *testing.T) {
	runGatewayScenario(t, framework.Options{}, func(g *gwEnv) {
		g.post("put k", "/v3/kv/put", fmt.Sprintf(`{"key":%q,"value":%q}`, b64("k"), b64("v")))
		g.post("enable without root", "/v3/auth/enable", `{}`)
		g.post("add root", "/v3/auth/user/add", `{"name":"root","password":"rootpw"}`)
		g.post("add alice", "/v3/auth/user/add", `{"name":"alice","password":"alicepw"}`)
		g.post("add alice again", "/v3/auth/user/add", `{"name":"alice","password":"x"}`)
		g.post("add user without password", "/v3/auth/user/add", `{"name":"bob","options":{"no_password":true}}`)
		g.post("grant root role", "/v3/auth/user/grant", `{"user":"root","role":"root"}`)
		g.post("add role", "/v3/auth/role/add", `{"name":"reader"}`)
		g.post("grant READ on [k, l)", "/v3/auth/role/grant", fmt.Sprintf(`{"name":"reader","perm":{"permType":"READ","key":%q,"range_end":%q}}`, b64("k"), b64("l")))
		g.post("grant to missing role", "/v3/auth/role/grant", fmt.Sprintf(`{"name":"nope","perm":{"permType":"WRITE","key":%q}}`, b64("k")))
		g.post("grant reader to alice", "/v3/auth/user/grant", `{"user":"alice","role":"reader"}`)
		g.post("role get", "/v3/auth/role/get", `{"role":"reader"}`)
		g.post("user get", "/v3/auth/user/get", `{"name":"alice"}`)
		g.post("user list", "/v3/auth/user/list", `{}`)
		g.post("role list", "/v3/auth/role/list", `{}`)
		g.post("status before", "/v3/auth/status", `{}`)
		g.post("enable", "/v3/auth/enable", `{}`)

		g.post("range without token", "/v3/kv/range", fmt.Sprintf(`{"key":%q}`, b64("k")))
		g.post("authenticate bad password", "/v3/auth/authenticate", `{"name":"alice","password":"wrong"}`)
		g.post("authenticate unknown user", "/v3/auth/authenticate", `{"name":"nobody","password":"x"}`)
		a := g.post("authenticate alice", "/v3/auth/authenticate", `{"name":"alice","password":"alicepw"}`, "token")
		alice := str(a["token"])
		if alice == "" {
			g.t.Fatalf("no token in %v", a)
		}
		g.token = alice
		g.post("alice reads k", "/v3/kv/range", fmt.Sprintf(`{"key":%q}`, b64("k")))
		g.post("alice cannot write k", "/v3/kv/put", fmt.Sprintf(`{"key":%q,"value":%q}`, b64("k"), b64("x")))
		g.post("alice cannot read z", "/v3/kv/range", fmt.Sprintf(`{"key":%q}`, b64("z")))
		g.post("alice is not admin", "/v3/auth/user/list", `{}`)
		g.token = "Bearer " + alice
		g.post("bearer token", "/v3/kv/range", fmt.Sprintf(`{"key":%q}`, b64("k")))
		g.token = "not-a-token"
		g.post("invalid token", "/v3/kv/range", fmt.Sprintf(`{"key":%q}`, b64("k")))
		g.token = ""
		req := g.request(context.Background(), "/v3/kv/range", fmt.Sprintf(`{"key":%q}`, b64("k")))
		req.Header.Set("Grpc-Metadata-Token", alice)
		g.do("token as gRPC metadata", req)
		req = g.request(context.Background(), "/v3/kv/range", fmt.Sprintf(`{"key":%q}`, b64("k")))
		req.Header.Set("Grpc-Metadata-Token", "Bearer "+alice)
		g.do("bearer token as gRPC metadata", req)

		r := g.post("authenticate root", "/v3/auth/authenticate", `{"name":"root","password":"rootpw"}`, "token")
		g.token = str(r["token"])
		g.post("root writes k", "/v3/kv/put", fmt.Sprintf(`{"key":%q,"value":%q}`, b64("k"), b64("root")))
		g.post("revoke alice's role", "/v3/auth/user/revoke", `{"name":"alice","role":"reader"}`)
		g.post("revoke permission", "/v3/auth/role/revoke", fmt.Sprintf(`{"role":"reader","key":%q,"range_end":%q}`, b64("k"), b64("l")))
		g.post("change password", "/v3/auth/user/changepw", `{"name":"alice","password":"new"}`)
		g.post("status enabled", "/v3/auth/status", `{}`)
		g.post("delete role", "/v3/auth/role/delete", `{"role":"reader"}`)
		g.post("delete user", "/v3/auth/user/delete", `{"name":"alice"}`)
		g.post("lease grant as root", "/v3/lease/grant", `{"TTL":60,"ID":5}`)
		g.post("disable", "/v3/auth/disable", `{}`)
		g.token = ""
		g.post("range after disable", "/v3/kv/range", fmt.Sprintf(`{"key":%q}`, b64("k")))
	})
}

func TestGatewayMaintenance(t *testing.T) {
	runGatewayScenario(t, framework.Options{}, func(g *gwEnv) {
		for i := range 5 {
			g.post("put", "/v3/kv/put", fmt.Sprintf(`{"key":%q,"value":%q}`, b64(fmt.Sprint("m", i)), b64("v")))
		}
		// What two different storage engines cannot agree on is masked;
		// what a client reads (presence, header revision, quota) is not.
		g.post("status", "/v3/maintenance/status", `{}`,
			"version", "dbSize", "dbSizeInUse", "leader", "raftIndex", "raftTerm", "raftAppliedIndex", "storageVersion")
		g.post("alarm get", "/v3/maintenance/alarm", `{"action":"GET"}`)
		g.post("alarm deactivate none", "/v3/maintenance/alarm", `{"action":"DEACTIVATE","alarm":"NOSPACE"}`)
		g.post("defragment", "/v3/maintenance/defragment", `{}`)
		g.post("hash", "/v3/maintenance/hash", `{}`, "hash")
		g.post("hashkv", "/v3/maintenance/hashkv", `{"revision":4}`, "hash")
		g.post("hashkv future", "/v3/maintenance/hashkv", `{"revision":100}`)
		g.post("move leader to self", "/v3/maintenance/transfer-leadership", `{"targetID":1}`)
		g.post("member list", "/v3/cluster/member/list", `{}`, "ID", "peerURLs", "clientURLs")
		g.post("member list linearizable", "/v3/cluster/member/list", `{"linearizable":true}`, "ID", "peerURLs", "clientURLs")
		g.post("member add bad URL", "/v3/cluster/member/add", `{"peerURLs":["bad"],"isLearner":true}`)
		g.post("member promote unknown", "/v3/cluster/member/promote", `{"ID":12345}`)
		g.post("member update unknown", "/v3/cluster/member/update", `{"ID":12345,"peerURLs":["http://10.0.0.1:2380"]}`)
		g.post("member remove unknown", "/v3/cluster/member/remove", `{"ID":12345}`)
		g.post("downgrade validate", "/v3/maintenance/downgrade", `{"action":"VALIDATE","version":"3.5"}`)
		g.post("downgrade validate 3.4", "/v3/maintenance/downgrade", `{"action":"VALIDATE","version":"3.4"}`)
		g.post("downgrade cancel", "/v3/maintenance/downgrade", `{"action":"CANCEL"}`)

		// A snapshot arrives as one JSON object a line, the database in
		// base64 blobs; the reassembled file is etcd's size rule: 512·n + 32.
		resp, err := g.hc.Do(g.request(context.Background(), "/v3/maintenance/snapshot", `{}`))
		if err != nil {
			g.t.Fatal(err)
		}
		defer resp.Body.Close()
		var size int
		dec := json.NewDecoder(resp.Body)
		last := map[string]any{}
		for {
			var m struct {
				Result struct {
					Blob           []byte `json:"blob"`
					RemainingBytes string `json:"remaining_bytes"`
					Version        string `json:"version"`
				} `json:"result"`
			}
			if err := dec.Decode(&m); err == io.EOF {
				break
			} else if err != nil {
				g.t.Fatalf("snapshot: %v", err)
			}
			size += len(m.Result.Blob)
			last["remaining_bytes"] = m.Result.RemainingBytes
		}
		if size == 0 || size%512 != 32 {
			g.t.Errorf("snapshot through the gateway: %d bytes, want 512·n + 32", size)
		}
		g.record(gwEntry{Label: "snapshot", Status: resp.StatusCode, Body: last})
	})
}

// TestGatewayHTTP covers what surrounds the REST mapping: CORS, preflight,
// unknown paths and methods.
func TestGatewayHTTP(t *testing.T) {
	runGatewayScenario(t, framework.Options{}, func(g *gwEnv) {
		cors := func(label string, req *http.Request, withBody bool) {
			resp, err := g.hc.Do(req)
			if err != nil {
				g.t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !withBody {
				body = nil
			}
			h := resp.Header
			g.record(gwEntry{Label: label, Status: resp.StatusCode, Body: strings.Join([]string{
				h.Get("Access-Control-Allow-Origin"), h.Get("Access-Control-Allow-Methods"), h.Get("Access-Control-Allow-Headers"), string(body),
			}, " | ")})
		}
		req, _ := http.NewRequest(http.MethodOptions, g.base+"/v3/kv/range", nil)
		req.Header.Set("Origin", "http://example.com")
		cors("preflight", req, true)
		req, _ = http.NewRequest(http.MethodPost, g.base+"/v3/kv/range", strings.NewReader(fmt.Sprintf(`{"key":%q}`, b64("k"))))
		cors("cors on a gateway answer", req, false)
		req, _ = http.NewRequest(http.MethodGet, g.base+"/health", nil)
		cors("cors on /health", req, true)
		req, _ = http.NewRequest(http.MethodGet, g.base+"/v3/kv/range", nil)
		g.do("GET on a POST route", req)
		g.post("unknown route", "/v3/kv/nope", `{}`)
		g.post("unknown service", "/v3/nope", `{}`)
	})
}

func TestGatewayDisabled(t *testing.T) {
	runGatewayScenario(t, framework.Options{DisableGRPCGateway: true}, func(g *gwEnv) {
		g.post("range", "/v3/kv/range", fmt.Sprintf(`{"key":%q}`, b64("k")))
		g.post("watch", "/v3/watch", `{}`)
		req, _ := http.NewRequest(http.MethodGet, g.base+"/health", nil)
		g.do("health still served", req)
	})
}
