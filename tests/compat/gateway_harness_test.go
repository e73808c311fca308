package compat

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gorilla/websocket"

	"github.com/metastore-dev/metastore/tests/framework"
)

// gwEnv is one backend's side of a JSON gateway scenario: plain net/http
// requests to the client port, each answer recorded (status, the headers a
// client may look at, the JSON body with the fields that must differ
// between two servers masked) for the comparison with etcd's transcript.
type gwEnv struct {
	t     *testing.T
	base  string // http://host:port
	hc    *http.Client
	log   *[]gwEntry
	token string // sent as the Authorization header when set
}

// gwEntry is one recorded exchange.
type gwEntry struct {
	Label   string
	Status  int
	Headers string // Content-Type and the Grpc-Metadata-* header names
	Body    any    // decoded JSON (masked), or the raw text when not JSON
	Lines   []any  // a streamed answer: one decoded JSON object per line
}

// headerIDs are the fields of every response header that differ between two
// single-member servers by construction; revision stays compared.
var headerIDs = []string{"cluster_id", "member_id", "raft_term"}

func newGWEnv(t *testing.T, srv *framework.Server) *gwEnv {
	return &gwEnv{
		t:    t,
		base: "http://" + srv.Endpoint,
		hc:   &http.Client{Timeout: 30 * time.Second},
		log:  new([]gwEntry),
	}
}

// b64 is how the gateway spells bytes fields.
func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// request builds a POST of body (a JSON text) to path with the env's token.
func (g *gwEnv) request(ctx context.Context, path, body string) *http.Request {
	g.t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.base+path, strings.NewReader(body))
	if err != nil {
		g.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if g.token != "" {
		req.Header.Set("Authorization", g.token)
	}
	return req
}

// post sends one unary request and records its answer with the named
// fields masked (wherever they occur, keeping whether they are present).
// It returns the decoded body for the scenario to read values from.
func (g *gwEnv) post(label, path, body string, mask ...string) map[string]any {
	g.t.Helper()
	return g.do(label, g.request(context.Background(), path, body), mask...)
}

// do sends req and records the answer; a streamed answer (several JSON
// objects, one a line) is recorded line by line.
func (g *gwEnv) do(label string, req *http.Request, mask ...string) map[string]any {
	g.t.Helper()
	resp, err := g.hc.Do(req)
	if err != nil {
		g.t.Fatalf("%s: %v", label, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		g.t.Fatalf("%s: read body: %v", label, err)
	}
	e := gwEntry{Label: label, Status: resp.StatusCode, Headers: headerSummary(resp.Header)}
	var first map[string]any
	lines := bytes.Split(bytes.TrimSpace(raw), []byte("\n"))
	for _, line := range lines {
		var v any
		if err := json.Unmarshal(line, &v); err != nil {
			e.Body, e.Lines = string(raw), nil
			break
		}
		if first == nil {
			first, _ = v.(map[string]any)
		}
		v = maskJSON(v, mask)
		if len(lines) == 1 {
			e.Body = v
		} else {
			e.Lines = append(e.Lines, v)
		}
	}
	g.record(e)
	return first
}

func (g *gwEnv) record(e gwEntry) {
	if os.Getenv("METASTORE_GW_DUMP") != "" {
		b, _ := json.Marshal(e)
		g.t.Logf("%s", b)
	}
	*g.log = append(*g.log, e)
}

// headerSummary is what of the headers is compared: the content type and
// which gRPC metadata the gateway forwarded.
func headerSummary(h http.Header) string {
	var names []string
	for k := range h {
		if strings.HasPrefix(k, "Grpc-Metadata-") {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	return h.Get("Content-Type") + " " + strings.Join(names, ",")
}

// maskJSON replaces the values of the named fields, and of the header IDs,
// with a placeholder; presence is kept, so a field one server omits and the
// other emits still shows.
func maskJSON(v any, mask []string) any {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			switch {
			case contains(mask, k):
				x[k] = "<masked>"
			case k == "header":
				if h, ok := val.(map[string]any); ok {
					for _, id := range headerIDs {
						if _, ok := h[id]; ok {
							h[id] = "<id>"
						}
					}
				}
				x[k] = maskJSON(val, mask)
			default:
				x[k] = maskJSON(val, mask)
			}
		}
	case []any:
		for i := range x {
			x[i] = maskJSON(x[i], mask)
		}
	}
	return v
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// gwStream is an open streaming request (/v3/watch): answers are read one
// line at a time.
type gwStream struct {
	g      *gwEnv
	label  string
	resp   *http.Response
	rd     *bufio.Reader
	cancel context.CancelFunc
}

// openStream posts body to path and keeps the answer open. The request
// body is complete (as `curl -d` sends it); the server keeps the stream.
func (g *gwEnv) openStream(label, path, body string) *gwStream {
	g.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	resp, err := (&http.Client{}).Do(g.request(ctx, path, body))
	if err != nil {
		cancel()
		g.t.Fatalf("%s: %v", label, err)
	}
	g.record(gwEntry{Label: label + " (open)", Status: resp.StatusCode, Headers: headerSummary(resp.Header)})
	s := &gwStream{g: g, label: label, resp: resp, rd: bufio.NewReader(resp.Body), cancel: cancel}
	g.t.Cleanup(s.close)
	return s
}

// next records the next line of the stream (within 10s) with the named
// fields masked and returns it decoded.
func (s *gwStream) next(mask ...string) map[string]any {
	s.g.t.Helper()
	type result struct {
		line []byte
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		line, err := s.rd.ReadBytes('\n')
		ch <- result{line, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-time.After(10 * time.Second):
		s.close()
		s.g.t.Fatalf("%s: no answer within 10s", s.label)
	}
	if r.err != nil {
		s.g.t.Fatalf("%s: %v (read %q)", s.label, r.err, r.line)
	}
	var v map[string]any
	if err := json.Unmarshal(r.line, &v); err != nil {
		s.g.t.Fatalf("%s: %v in %q", s.label, err, r.line)
	}
	var masked map[string]any
	json.Unmarshal(r.line, &masked)
	s.g.record(gwEntry{Label: s.label, Body: maskJSON(masked, mask)})
	return v
}

func (s *gwStream) close() {
	s.cancel()
	s.resp.Body.Close()
}

// runGatewayScenario runs f against etcd and then metastore, each on a
// fresh server started with o, and requires identical transcripts.
func runGatewayScenario(t *testing.T, o framework.Options, f func(g *gwEnv)) {
	t.Helper()
	var logs [][]gwEntry
	for _, b := range framework.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			g := newGWEnv(t, b.Start(t, o))
			f(g)
			logs = append(logs, *g.log)
		})
	}
	if len(logs) == 2 {
		if d := cmp.Diff(logs[0], logs[1]); d != "" {
			t.Errorf("metastore's gateway answers differ from etcd's (-etcd +metastore):\n%s", d)
		}
	}
}

// field walks a decoded JSON object by keys.
func field(v any, path ...string) any {
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// str is a JSON value as a string ("" when absent).
func str(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

// gwWebsocket is a stream over a websocket: wsproxy turns each message into
// one request of the stream and each answer into one message.
type gwWebsocket struct {
	g     *gwEnv
	label string
	conn  *websocket.Conn
}

func (g *gwEnv) openWebsocket(label, path string) *gwWebsocket {
	g.t.Helper()
	h := http.Header{}
	if g.token != "" {
		h.Set("Authorization", g.token)
	}
	conn, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(g.base, "http")+path, h)
	if err != nil {
		g.t.Fatalf("%s: %v", label, err)
	}
	g.record(gwEntry{Label: label + " (open)", Status: resp.StatusCode})
	g.t.Cleanup(func() { conn.Close() })
	return &gwWebsocket{g: g, label: label, conn: conn}
}

func (w *gwWebsocket) send(msg string) {
	w.g.t.Helper()
	if err := w.conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		w.g.t.Fatalf("%s: send: %v", w.label, err)
	}
}

// next records the next message (within 10s), masked like a stream line.
func (w *gwWebsocket) next(mask ...string) {
	w.g.t.Helper()
	w.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, msg, err := w.conn.ReadMessage()
	if err != nil {
		w.g.t.Fatalf("%s: %v", w.label, err)
	}
	var v any
	if err := json.Unmarshal(msg, &v); err != nil {
		w.g.t.Fatalf("%s: %v in %q", w.label, err, msg)
	}
	w.g.record(gwEntry{Label: w.label, Body: maskJSON(v, mask)})
}
