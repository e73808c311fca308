package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/metastore-dev/metastore/server"
)

const snapshotUsage = `Usage:

  metastore snapshot restore FILE --data-dir DIR [--skip-hash-check]
                             [--bump-revision N --mark-compacted]
                             [--name NAME --initial-cluster NAME=URL,...
                              --initial-cluster-token TOKEN
                              --initial-advertise-peer-urls URL,...]
    Restore a snapshot saved with 'etcdctl snapshot save' from etcd (3.4 to
    3.6) or metastore, or an etcd member's member/snap/db file (with
    --skip-hash-check), into DIR, which must not exist or be empty. Start
    metastore with --data-dir DIR afterwards. Every revision of every key is
    kept, with the compaction, leases and auth; alarms are dropped. As
    etcdutl's restore, the restored member is a new one-member cluster (new
    cluster and member ids). A damaged file is refused and DIR left as it
    was.

    --skip-hash-check  accept a file without the SHA-256 trailer of a saved
                       snapshot (member/snap/db), and do not verify one
    --bump-revision N  raise the restored revision by N, and with
    --mark-compacted   compact at it (as etcdutl: for restoring an older
                       backup; watchers from before must start over)

  Disaster recovery into a new cluster, as etcdutl's: restore the same
  file into every member's DIR with the same --initial-cluster and
  --initial-cluster-token and each member's own --name and
  --initial-advertise-peer-urls, then start the members with those flags.
  The member and cluster IDs are derived from them as etcd does; the
  snapshot's member set is replaced by --initial-cluster. Given any of
  these flags, the others take etcdutl's defaults:

    --name                         member name (default "default")
    --initial-cluster              the new cluster's members
                                   (default "NAME=http://localhost:2380")
    --initial-cluster-token        token of the new cluster (default
                                   "etcd-cluster")
    --initial-advertise-peer-urls  this member's peer URLs, as listed for
                                   --name (default "http://localhost:2380")
    --data-dir                     may then be left out: NAME.etcd, as
                                   etcdutl's default
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
	skipHash := fs.Bool("skip-hash-check", false, "accept a file without a SHA-256 trailer (etcd's member/snap/db) and do not verify one")
	bump := fs.Uint64("bump-revision", 0, "raise the restored revision by this much (needs --mark-compacted)")
	markCompacted := fs.Bool("mark-compacted", false, "compact at the restored revision (needs --bump-revision)")
	var rc server.RestoreCluster
	var advertise string
	fs.StringVar(&rc.Name, "name", "", "this member's name in --initial-cluster")
	fs.StringVar(&rc.InitialCluster, "initial-cluster", "", "the new cluster's members, name=peer-url,...")
	fs.StringVar(&rc.Token, "initial-cluster-token", "", "token of the new cluster")
	fs.StringVar(&advertise, "initial-advertise-peer-urls", "", "this member's peer URLs, comma-separated")
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
	opts := server.RestoreOptions{SkipHashCheck: *skipHash, BumpRevision: *bump, MarkCompacted: *markCompacted}
	clusterFlags := false
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "name", "initial-cluster", "initial-cluster-token", "initial-advertise-peer-urls":
			clusterFlags = true
		}
	})
	if *dataDir == "" && clusterFlags {
		// etcdutl's default: <name>.etcd.
		name := rc.Name
		if name == "" {
			name = "default"
		}
		*dataDir = name + ".etcd"
	}
	if file == "" || *dataDir == "" {
		fmt.Fprintf(stderr, "metastore snapshot restore: FILE and --data-dir are required\n%s", snapshotUsage)
		return 2
	}
	var (
		rev int64
		err error
	)
	if clusterFlags {
		for _, u := range strings.Split(advertise, ",") {
			if u = strings.TrimSpace(u); u != "" {
				rc.AdvertisePeerURLs = append(rc.AdvertisePeerURLs, u)
			}
		}
		rev, err = server.RestoreSnapshotCluster(file, *dataDir, opts, rc)
	} else {
		// No cluster flags: a single node with new random IDs, as before.
		rev, err = server.RestoreSnapshot(file, *dataDir, opts)
	}
	if err != nil {
		fmt.Fprintf(stderr, "metastore snapshot restore: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "Restored snapshot %s into %s at revision %d\n", file, *dataDir, rev)
	return 0
}
