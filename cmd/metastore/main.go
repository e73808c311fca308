// Command metastore runs an etcd-v3-compatible metadata store.
//
// With no arguments it serves a single-node store on 127.0.0.1:2379 with
// data in ./metastore.data. It takes etcd's server flags, so etcd scripts
// and unit files start it unchanged; `metastore --help` lists them.
//
// This is the only place that handles signals and calls os.Exit; the rest
// of the command is run, which tests call directly.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/metastore-dev/metastore/cmd/metastore/internal/gcfloor"
	"github.com/metastore-dev/metastore/cmd/metastore/internal/policycmd"
	"github.com/metastore-dev/metastore/server"
	"github.com/metastore-dev/metastore/server/config"
)

// version is the metastore release, set at build time with
// -ldflags "-X main.version=1.2.3".
var version = "0.1.0-dev"

// gitSHA is the source revision, set at build time with
// -ldflags "-X main.gitSHA=...". When empty the revision recorded by the
// go command (if any) is printed.
var gitSHA = ""

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		// Restore default handling after the first signal, so a second
		// one kills a shutdown that hangs.
		stop()
	}()
	stopFloor := startGCFloor(os.Getenv)
	stopProfile := startCPUProfile(os.Getenv, os.Stderr)
	code := runAs(ctx, filepath.Base(os.Args[0]), os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	stopProfile()
	stopFloor()
	os.Exit(code)
}

// startGCFloor starts the adaptive GC floor (gcfloor) unless the operator
// set GOGC, which then rules alone. With GOMEMLIMIT set the floor stays
// under half the limit. It returns the function that stops it.
func startGCFloor(getenv func(string) string) (stop func()) {
	if getenv("GOGC") != "" {
		return func() {}
	}
	return gcfloor.Start(gcfloor.Options{OnIdle: trimCHeap}).Stop
}

// run executes the command line args (without the program name) and
// returns the exit status: 0 on success, 1 on a bad configuration or a
// server failure, 2 on a malformed command line. ctx ends serving.
func run(ctx context.Context, args, env []string, stdout, stderr io.Writer) int {
	return runAs(ctx, "metastore", args, env, stdout, stderr)
}

// runAs is run for a program invoked as prog: under etcd's name it takes
// etcd's defaults (config.DefaultAs).
func runAs(ctx context.Context, prog string, args, env []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		// Subcommands are bare words; a flag or nothing means serve.
		// NB: new subcommands (snapshot restore, policy eval) go here.
		switch args[0] {
		case "version", "--version", "-version":
			return versionCmd(args[1:], stdout, stderr)
		case "help":
			printUsage(stdout)
			return 0
		case "snapshot":
			return snapshotCmd(args[1:], stdout, stderr)
		case "policy":
			return policycmd.Run(ctx, args[1:], stdout, stderr)
		}
		if !strings.HasPrefix(args[0], "-") {
			fmt.Fprintf(stderr, "metastore: unknown command %q\nRun 'metastore --help' for usage.\n", args[0])
			return 2
		}
	}
	return serve(ctx, prog, args, env, stdout, stderr)
}

// serve loads the configuration and runs the server until ctx ends.
func serve(ctx context.Context, prog string, args, env []string, stdout, stderr io.Writer) int {
	cfg, notes, err := config.LoadAs(prog, args, env)
	var usageErr *config.UsageError
	switch {
	case errors.Is(err, config.ErrHelp):
		printUsage(stdout)
		return 0
	case errors.As(err, &usageErr):
		fmt.Fprintf(stderr, "metastore: %v\nRun 'metastore --help' for usage.\n", err)
		return 2
	case err != nil:
		fmt.Fprintln(stderr, "metastore: invalid configuration:")
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(stderr, "  %s\n", line)
		}
		// Warnings such as an unrecognized METASTORE_ variable often
		// explain why a setting did not take.
		for _, n := range notes {
			if n.Level >= slog.LevelWarn {
				fmt.Fprintf(stderr, "metastore: warning: %s\n", n.Msg)
			}
		}
		return 1
	}

	lg, setLogging := newReloadableLogger(cfg.Logging, stderr) // logger.go: a reload may change level and format
	for _, n := range notes {
		lg.Log(ctx, n.Level, n.Msg)
	}
	lg.Info("starting metastore", startAttrs(cfg)...)

	srv, err := server.New(cfg, lg)
	if err != nil {
		lg.Error("cannot start metastore", "err", err)
		return 1
	}
	// SIGHUP (and a changed policy module, which the server watches for)
	// reloads the policies from a fresh read of the same configuration.
	srv.SetLoggingReloader(setLogging)
	srv.SetConfigReloader(func() (*config.Config, error) {
		c, _, err := config.LoadAs(prog, args, env)
		return c, err
	})
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				lg.Info("SIGHUP: reloading the configuration")
				if err := srv.Reload(ctx); err != nil {
					lg.Error("reload failed", "err", err)
				}
			}
		}
	}()
	// A Run that reports the cancellation we asked for is a clean stop.
	if err := srv.Run(ctx); err != nil && !(ctx.Err() != nil && errors.Is(err, context.Canceled)) {
		lg.Error("metastore stopped with an error", "err", err)
		return 1
	}
	lg.Info("metastore stopped")
	return 0
}

// printVersion prints etcd's `etcd --version` lines, then metastore's own.
// NB: tools read "etcd Version:" as the version of the etcd server they
// drive (etcd's e2e framework decides which flags exist from it), so it is
// the etcd release whose API metastore implements, a full semver as etcd
// prints it.
func printVersion(w io.Writer) {
	fmt.Fprintf(w, "etcd Version: %s\n", server.EtcdVersion)
	fmt.Fprintf(w, "Git SHA: %s\n", revision())
	fmt.Fprintf(w, "Go Version: %s\n", runtime.Version())
	fmt.Fprintf(w, "Go OS/Arch: %s/%s\n", runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(w, "metastore Version: %s\n", version)
}

const versionUsage = `Usage:

  metastore version | --version
    Print the version (etcd's --version layout) and exit.
`

// versionCmd runs `metastore version ARGS`: no arguments, or a request for
// help.
func versionCmd(args []string, stdout, stderr io.Writer) int {
	switch {
	case len(args) == 0:
		printVersion(stdout)
		return 0
	case isHelp(args[0]):
		fmt.Fprint(stdout, versionUsage)
		return 0
	}
	fmt.Fprintf(stderr, "metastore version: unexpected argument %q\n%s", args[0], versionUsage)
	return 2
}

// isHelp reports whether a command-line word asks for help, as Go's flag
// package and etcdctl take it.
func isHelp(arg string) bool {
	switch arg {
	case "help", "-h", "--h", "-help", "--help":
		return true
	}
	return false
}

// revision is gitSHA, else the VCS revision the go command stamped.
func revision() string {
	if gitSHA != "" {
		return gitSHA
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" && dirty {
			rev += "-dirty"
		}
		if rev != "" {
			return rev
		}
	}
	return "not provided"
}

const usageHeader = `Usage:

  metastore [flags]
    Start a metastore server: an etcd v3 compatible store, by default a
    single member on 127.0.0.1:2379 with data in ./metastore.data.

  metastore version | --version
    Print the version and exit.

  metastore snapshot restore FILE --data-dir DIR
    Restore a snapshot saved with 'etcdctl snapshot save' into DIR.

  metastore policy eval --module M.wasm --request R.yaml
  metastore policy bench --module M.wasm --request R.yaml
    Run a WebAssembly policy against sample requests without a server, or
    time it ('metastore policy help' for the options).

  metastore help | -h | --help
    Show this help.

Every setting can also be given in the YAML file (--config-file; template:
configs/metastore.yaml) and in the environment, as METASTORE_<SECTION>_<KEY>
or etcd's ETCD_<FLAG>. Flags override the environment, which overrides the
file.
`

func printUsage(w io.Writer) {
	fmt.Fprint(w, usageHeader)
	config.PrintFlags(w)
}
