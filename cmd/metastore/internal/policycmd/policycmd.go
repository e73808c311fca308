package policycmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/auth/wasmpolicy"
	"github.com/metastore-dev/metastore/internal/policyabi"
	"github.com/metastore-dev/metastore/server/config"
	"github.com/metastore-dev/metastore/server/guard"
	"github.com/metastore-dev/metastore/wasmhost"
)

// Usage is the help text of `metastore policy`.
const Usage = `Usage:
  metastore policy eval  --module M.wasm --request R.yaml [options]
  metastore policy bench --module M.wasm --request R.yaml [options] [--n N] [--concurrency C]

eval runs every request of R.yaml through the module and prints the
verdict, reason and mutation; bench times the first request. Both apply
the server's limits (deadlines, memory, fuel, init deadline) and exit 1,
naming the failure, when the module cannot load or a call fails.

Options:
  --settings JSON       settings handed to policy_init (or @file)
  --sha256 HEX          refuse the module unless it has this digest
  --config FILE --policy NAME
                        take module, sha256, settings, limits and on_error from
                        a policies: entry of a metastore config file
  --timeout D           per-call deadline (default: the policy's, 5ms/20ms)
  --fuel N              per-call fuel budget (default: the policy's, none)
  --cache-dir DIR       compilation cache (default: the user cache directory;
                        "" compiles in memory every time)
`

// Run executes `metastore policy ARGS` and returns the exit status: 0 when
// every request was evaluated (whatever the verdicts), 1 when the module
// or a request could not be used or a call failed (a timeout, trap, fuel,
// memory, bad result or bad mutation: the same limits as the server's,
// and the message says which), 2 on a malformed command line.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, Usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	sub := args[0]
	if sub != "eval" && sub != "bench" {
		fmt.Fprintf(stderr, "metastore policy: unknown command %q\n%s", sub, Usage)
		return 2
	}
	fs := flag.NewFlagSet("metastore policy "+sub, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	module := fs.String("module", "", "")
	request := fs.String("request", "", "")
	settings := fs.String("settings", "", "")
	sha := fs.String("sha256", "", "")
	cfgFile := fs.String("config", "", "")
	policyName := fs.String("policy", "", "")
	timeout := fs.Duration("timeout", 0, "")
	fuel := fs.Int64("fuel", 0, "")
	cacheDir := fs.String("cache-dir", defaultCacheDir(), "")
	n := fs.Int("n", 100_000, "")
	conc := fs.Int("concurrency", 1, "")
	if err := fs.Parse(args[1:]); errors.Is(err, flag.ErrHelp) {
		// -h and --help after the subcommand ask for help, not an error.
		fmt.Fprint(stdout, Usage)
		return 0
	} else if err != nil {
		fmt.Fprintf(stderr, "metastore policy %s: %v\n%s", sub, err, Usage)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "metastore policy %s: unexpected argument %q\n", sub, fs.Arg(0))
		return 2
	}
	pcfg := wasmhost.Config{Name: "eval", Path: *module, SHA256: *sha}
	var prefixes [][]byte // the policy's lane, when taken from a config
	if *cfgFile != "" || *policyName != "" {
		var err error
		if prefixes, err = fromConfig(&pcfg, *cfgFile, *policyName); err != nil {
			fmt.Fprintf(stderr, "metastore policy %s: %v\n", sub, err)
			return 1
		}
		if *module != "" {
			pcfg.Path = *module
		}
	}
	if pcfg.Name == "eval" {
		pcfg.Name = filepath.Base(pcfg.Path)
	}
	if pcfg.Path == "" || *request == "" {
		fmt.Fprintf(stderr, "metastore policy %s: --module (or --config and --policy) and --request are required\n", sub)
		return 2
	}
	if *settings != "" {
		s := []byte(*settings)
		if strings.HasPrefix(*settings, "@") {
			var err error
			if s, err = os.ReadFile((*settings)[1:]); err != nil {
				fmt.Fprintf(stderr, "metastore policy %s: settings: %v\n", sub, err)
				return 1
			}
		}
		pcfg.Settings = s
	}
	if *timeout > 0 {
		pcfg.Limits.AuthorizeTimeout, pcfg.Limits.AdmitTimeout = *timeout, *timeout
	}
	if *fuel > 0 {
		pcfg.Limits.Fuel = *fuel
	}
	reqs, err := ReadRequests(*request)
	if err != nil {
		fmt.Fprintf(stderr, "metastore policy %s: %v\n", sub, err)
		return 1
	}
	compiled := make([]*Compiled, len(reqs))
	for i := range reqs {
		if compiled[i], err = reqs[i].Compile(); err != nil {
			fmt.Fprintf(stderr, "metastore policy %s: %s request %d: %v\n", sub, *request, i, err)
			return 1
		}
	}

	var logMu sync.Mutex
	var compileTime, initTime atomic.Int64
	host, err := wasmhost.NewHost(wasmhost.Options{CacheDir: *cacheDir, Events: wasmhost.Events{
		Log: func(_ string, level int32, msg string) {
			logMu.Lock()
			defer logMu.Unlock()
			fmt.Fprintf(stderr, "policy log [%s]: %s\n", levelName(level), msg)
		},
		Compiled:        func(_ string, d time.Duration) { compileTime.Store(int64(d)) },
		InstanceCreated: func(_ string, d time.Duration) { initTime.CompareAndSwap(0, int64(d)) },
	}})
	if err != nil {
		fmt.Fprintf(stderr, "metastore policy %s: %v\n", sub, err)
		return 1
	}
	defer host.Close(context.Background())
	if sub == "eval" {
		pcfg.Limits.Instances = 1
	}
	start := time.Now()
	p, err := host.Load(ctx, pcfg)
	if err != nil {
		fmt.Fprintf(stderr, "metastore policy %s: %v\n", sub, err)
		return 1
	}
	defer p.Close()
	loadTime := time.Since(start)

	if sub == "eval" {
		failed := 0
		for i, c := range compiled {
			name := c.Name
			if name == "" {
				name = fmt.Sprintf("request %d", i)
			}
			d := p.Call(ctx, c.Hook, c.Encoded)
			if d.Verdict == wasmhost.Mutated && prefixes != nil {
				// As the server does: a mutation must stay in its lane.
				if err := wasmpolicy.CheckMutation(c.Kind, c.Message, d.Mutation, prefixes); err != nil {
					d = p.Fail(c.Hook, wasmhost.KindBadMutation, err)
				}
			}
			printDecision(stdout, name, c, d)
			if d.Err != nil {
				failed++
				fmt.Fprintf(stderr, "metastore policy eval: %s: %s\n", name, d.Reason)
			}
		}
		if failed > 0 {
			fmt.Fprintf(stderr, "metastore policy eval: %d of %d requests failed; the verdicts shown are on_error's\n", failed, len(compiled))
			return 1
		}
		return 0
	}
	return bench(ctx, stdout, stderr, p, compiled[0], *n, *conc, loadTime, time.Duration(compileTime.Load()), time.Duration(initTime.Load()))
}

// defaultCacheDir keeps compiled policies between runs of eval and bench.
func defaultCacheDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "metastore", "wasm-cache")
}

func levelName(l int32) string {
	switch l {
	case 0:
		return "debug"
	case 1:
		return "info"
	case 2:
		return "warn"
	}
	return "error"
}

// fromConfig fills cfg from a policies: entry of a metastore config file
// and returns the prefixes it matches (non-nil: a mutation's lane).
func fromConfig(cfg *wasmhost.Config, file, name string) ([][]byte, error) {
	if file == "" || name == "" {
		return nil, errors.New("--config and --policy go together")
	}
	c, _, err := config.Load([]string{"--config-file", file}, nil)
	if err != nil {
		return nil, fmt.Errorf("config %s:\n%w", file, err)
	}
	for _, pol := range c.Policies {
		if pol.Name != name {
			continue
		}
		prefixes := [][]byte{}
		for _, pre := range pol.Match.Prefixes {
			prefixes = append(prefixes, []byte(pre))
		}
		*cfg, err = guard.HostConfig(&pol, c.Limits.MaxRequestBytes)
		return prefixes, err
	}
	return nil, fmt.Errorf("config %s has no policy %q", file, name)
}

func printDecision(w io.Writer, name string, c *Compiled, d wasmhost.Decision) {
	fmt.Fprintf(w, "%s (%s):\n  verdict: %s\n", name, c.Hook, d.Verdict)
	if d.Reason != "" {
		fmt.Fprintf(w, "  reason: %q\n", d.Reason)
	}
	if d.Err != nil {
		fmt.Fprintf(w, "  error: %s (on_error decided the verdict)\n", d.Kind)
	} else if d.Kind != "" {
		fmt.Fprintf(w, "  note: %s (counted; the verdict stands)\n", d.Kind)
	}
	if d.Mutation != nil {
		fmt.Fprintf(w, "  mutation: %s\n", describeMutation(c.Kind, d.Mutation))
	}
}

func describeMutation(kind wasmhost.AdmitKind, b []byte) string {
	var m interface {
		Unmarshal([]byte) error
		String() string
	}
	switch kind {
	case policyabi.AdmitPut:
		m = &pb.PutRequest{}
	case policyabi.AdmitDeleteRange:
		m = &pb.DeleteRangeRequest{}
	case policyabi.AdmitTxn:
		m = &pb.TxnRequest{}
	default:
		return fmt.Sprintf("%x", b)
	}
	if err := m.Unmarshal(b); err != nil {
		return fmt.Sprintf("%x (does not decode as %T: %v)", b, m, err)
	}
	return fmt.Sprintf("%T{%s}", m, m.String())
}

// bench times n calls; it stops at the first failed call (a timeout, a
// trap…): the numbers of a policy that fails are not its speed, and a
// runaway guest would otherwise hold the command for n deadlines.
func bench(ctx context.Context, w, errw io.Writer, p *wasmhost.Policy, c *Compiled, n, conc int, load, compile, init time.Duration) int {
	conc = max(conc, 1)
	per := max(n/conc, 1)
	lat := make([][]time.Duration, conc)
	verdicts := make([]map[wasmhost.Verdict]int, conc)
	var wg sync.WaitGroup
	var failed atomic.Pointer[wasmhost.Decision]
	start := time.Now()
	for g := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := make([]time.Duration, 0, per)
			v := map[wasmhost.Verdict]int{}
			for i := 0; i < per && failed.Load() == nil; i++ {
				t := time.Now()
				d := p.Call(ctx, c.Hook, c.Encoded)
				l = append(l, time.Since(t))
				v[d.Verdict]++
				if d.Err != nil {
					failed.CompareAndSwap(nil, &d)
				}
			}
			lat[g], verdicts[g] = l, v
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if d := failed.Load(); d != nil {
		calls := 0
		for g := range conc {
			calls += len(lat[g])
		}
		fmt.Fprintf(errw, "metastore policy bench: stopped after %d calls in %v: %s\n",
			calls, elapsed.Round(time.Millisecond), d.Reason)
		return 1
	}
	var all []time.Duration
	total := map[wasmhost.Verdict]int{}
	for g := range conc {
		all = append(all, lat[g]...)
		for v, k := range verdicts[g] {
			total[v] += k
		}
	}
	slices.Sort(all)
	q := func(f float64) time.Duration { return all[min(len(all)-1, int(f*float64(len(all))))] }
	fmt.Fprintf(w, "module:       %s\n", filepath.Base(p.Name()))
	fmt.Fprintf(w, "load:         %v (compile %v, first instance %v)\n", load.Round(time.Microsecond), compile.Round(time.Microsecond), init.Round(time.Microsecond))
	fmt.Fprintf(w, "calls:        %d (%s, concurrency %d, GOMAXPROCS %d)\n", len(all), c.Hook, conc, runtime.GOMAXPROCS(0))
	fmt.Fprintf(w, "throughput:   %.0f calls/s\n", float64(len(all))/elapsed.Seconds())
	fmt.Fprintf(w, "latency:      p50 %v  p90 %v  p99 %v  max %v\n", q(0.5), q(0.9), q(0.99), all[len(all)-1])
	var vs []string
	for v, k := range total {
		vs = append(vs, fmt.Sprintf("%s=%d", v, k))
	}
	slices.Sort(vs)
	fmt.Fprintf(w, "verdicts:     %s\n", strings.Join(vs, " "))
	st := p.Stats()
	fmt.Fprintf(w, "instances:    %d live, %d pool misses, %d KiB memory idle\n", st.Instances, st.Misses, st.MemoryBytes>>10)
	return 0
}
