package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/metastore-dev/metastore/server"
)

const snapshotUsage = `Usage:

  metastore snapshot restore FILE --data-dir DIR
    Restore a snapshot saved with 'etcdctl snapshot save' from a metastore
    server into DIR, which must not exist or be empty. Start metastore with
    --data-dir DIR afterwards. As etcdutl's restore, the restored member is a
    new one-member cluster (new cluster and member ids) with the snapshot's
    data, revisions and compaction.
`

// snapshotCmd runs `metastore snapshot ...` and returns the exit status.
func snapshotCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || isHelp(args[0]) {
		fmt.Fprint(stdout, snapshotUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if args[0] != "restore" {
		fmt.Fprintf(stderr, "metastore snapshot: unknown command %q\n%s", args[0], snapshotUsage)
		return 2
	}
	fs := flag.NewFlagSet("snapshot restore", flag.ContinueOnError)
	// NB: the flag package would print its own usage to stderr on -h and
	// on errors; ours goes to stdout on a request for help (exit 0), to
	// stderr with the error otherwise (exit 2).
	fs.SetOutput(io.Discard)
	dataDir := fs.String("data-dir", "", "directory to restore into (must not exist or be empty)")
	// The file may come before or after the flags, as in etcdutl.
	var file string
	rest := args[1:]
	for len(rest) > 0 {
		if err := fs.Parse(rest); errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, snapshotUsage)
			return 0
		} else if err != nil {
			fmt.Fprintf(stderr, "metastore snapshot restore: %v\n%s", err, snapshotUsage)
			return 2
		}
		rest = fs.Args()
		if len(rest) > 0 {
			if file != "" {
				fmt.Fprintf(stderr, "metastore snapshot restore: expected one FILE, got %q and %q\n", file, rest[0])
				return 2
			}
			file, rest = rest[0], rest[1:]
		}
	}
	if file == "" || *dataDir == "" {
		fmt.Fprintf(stderr, "metastore snapshot restore: FILE and --data-dir are required\n%s", snapshotUsage)
		return 2
	}
	rev, err := server.RestoreSnapshot(file, *dataDir)
	if err != nil {
		fmt.Fprintf(stderr, "metastore snapshot restore: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "Restored snapshot %s into %s at revision %d\n", file, *dataDir, rev)
	return 0
}
