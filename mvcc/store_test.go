package mvcc

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestDataDriven runs the scripts in testdata/. Commands:
//
//	put key=K value=V [lease=L]         one write transaction, committed
//	del key=K [end=E]                    delete range, committed
//	txn                                  body: one op per line, all in one txn
//	                                     ("put K V", "del K [E]", "range K [E]")
//	range key=K [end=E] [rev=R] [limit=N] [count] [stop] [keys-only] [pinned]
//	                                     stop: StopAtLimit; pinned: read the
//	                                     view taken by the last "pin"
//	pin / unpin                          take / release a PinnedView
//	compact rev=R                        schedule and wait for compaction
//	versions                             every stored version, raw
//	log                                  the change log
//	reopen                               close and reopen the store
//	set-lease id=N rec=R / del-lease id=N   write or delete a lease record
//	leases                               every lease record
//	lease-keys id=N [batch]              keys attached to lease N (committed
//	                                     view, or inside a new batch)
//	attachments                          every lease → key attachment, raw
//
// In keys, "\0" stands for a zero byte and "*" for an empty non-nil end
// (every key >= key).
func TestDataDriven(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		if strings.Contains(path, "testdata/fuzz/") {
			t.Skip("go test -fuzz seed corpus")
		}
		fs := vfs.NewMem()
		s, err := Open("db", Options{FS: fs, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
		if err != nil {
			t.Fatal(err)
		}
		var pinned *PinnedView
		defer func() {
			if pinned != nil {
				pinned.End()
			}
			s.Close()
		}()
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			switch d.Cmd {
			case "put":
				return runTxn(t, s, func(tx *WriteTxn) string {
					rev, prev, err := tx.Put(arg(d, "key"), []byte(argStr(d, "value")), int64(argInt(d, "lease")))
					if err != nil {
						return err.Error()
					}
					return fmt.Sprintf("rev=%d prev=%s", rev, fmtKV(prev))
				})
			case "del":
				return runTxn(t, s, func(tx *WriteTxn) string {
					kvs, err := tx.DeleteRange(arg(d, "key"), argEnd(d))
					if err != nil {
						return err.Error()
					}
					return fmt.Sprintf("deleted=%d", len(kvs))
				})
			case "txn":
				return runTxn(t, s, func(tx *WriteTxn) string {
					var out strings.Builder
					for _, line := range strings.Split(strings.TrimSpace(d.Input), "\n") {
						f := strings.Fields(line)
						switch f[0] {
						case "put":
							var lease int64
							if len(f) > 3 {
								lease, _ = strconv.ParseInt(f[3], 10, 64)
							}
							rev, _, err := tx.Put(unq(f[1]), []byte(f[2]), lease)
							fmt.Fprintf(&out, "put %s rev=%d err=%v\n", f[1], rev, err)
						case "del":
							var end []byte
							if len(f) > 2 {
								end = unq(f[2])
							}
							kvs, err := tx.DeleteRange(unq(f[1]), end)
							fmt.Fprintf(&out, "del %s deleted=%d err=%v\n", f[1], len(kvs), err)
						case "range":
							var end []byte
							if len(f) > 2 {
								end = unq(f[2])
							}
							rr, err := tx.Range(context.Background(), unq(f[1]), end, RangeOptions{})
							out.WriteString(fmtRange(rr, err))
						}
					}
					return out.String()
				})
			case "range":
				ro := RangeOptions{Rev: int64(argInt(d, "rev")), Limit: int64(argInt(d, "limit")), Count: d.HasArg("count"), StopAtLimit: d.HasArg("stop"), KeysOnly: d.HasArg("keys-only")}
				rangeFn := s.Range
				if d.HasArg("pinned") {
					rangeFn = pinned.Range
				}
				rr, err := rangeFn(context.Background(), arg(d, "key"), argEnd(d), ro)
				return fmtRange(rr, err)
			case "pin":
				pinned = s.ReadPinned()
				return fmt.Sprintf("rev=%d first-rev=%d", pinned.Rev(), pinned.FirstRev())
			case "unpin":
				pinned.End()
				pinned = nil
				return "ok"
			case "compact":
				b, err := s.NewBatch()
				if err != nil {
					return err.Error()
				}
				done, err := b.Compact(int64(argInt(d, "rev")))
				if err != nil {
					b.Abort()
					return err.Error()
				}
				if err := b.Commit(); err != nil {
					return err.Error()
				}
				<-done
				return fmt.Sprintf("ok compact-rev=%d", s.CompactRev())
			case "set-lease", "del-lease":
				b, err := s.NewBatch()
				if err != nil {
					return err.Error()
				}
				if d.Cmd == "set-lease" {
					err = b.SetLease(int64(argInt(d, "id")), []byte(argStr(d, "rec")))
				} else {
					err = b.DeleteLease(int64(argInt(d, "id")))
				}
				if err != nil {
					b.Abort()
					return err.Error()
				}
				if err := b.Commit(); err != nil {
					return err.Error()
				}
				return "ok\n"
			case "leases":
				var out strings.Builder
				err := s.ForEachLease(func(id int64, rec []byte) error {
					fmt.Fprintf(&out, "%d %q\n", id, rec)
					return nil
				})
				if err != nil {
					return err.Error()
				}
				if out.Len() == 0 {
					return "(none)\n"
				}
				return out.String()
			case "lease-keys":
				id := int64(argInt(d, "id"))
				var keys [][]byte
				if d.HasArg("batch") {
					b, err := s.NewBatch()
					if err != nil {
						return err.Error()
					}
					keys, err = b.Txn().LeaseKeys(id)
					b.Abort()
					if err != nil {
						return err.Error()
					}
				} else {
					tx, err := s.Read()
					if err != nil {
						return err.Error()
					}
					keys, err = tx.LeaseKeys(id)
					tx.End()
					if err != nil {
						return err.Error()
					}
				}
				return fmt.Sprintf("%q\n", keys)
			case "attachments":
				return dumpPrefix(t, s, prefixAttach)
			case "versions":
				return dumpPrefix(t, s, prefixKey)
			case "log":
				return dumpPrefix(t, s, prefixLog)
			case "reopen":
				if err := s.Close(); err != nil {
					return err.Error()
				}
				s, err = Open("db", Options{FS: fs})
				if err != nil {
					return err.Error()
				}
				return fmt.Sprintf("rev=%d compact-rev=%d", s.Rev(), s.CompactRev())
			}
			t.Fatalf("unknown command %q", d.Cmd)
			return ""
		})
	})
}

func runTxn(t *testing.T, s *Store, f func(*WriteTxn) string) string {
	t.Helper()
	b, err := s.NewBatch()
	if err != nil {
		return err.Error()
	}
	tx := b.Txn()
	out := f(tx)
	tx.End()
	if err := b.Commit(); err != nil {
		return err.Error()
	}
	if !strings.HasSuffix(out, "\n") {
		out += "\n"
	}
	return out + fmt.Sprintf("store-rev=%d\n", s.Rev())
}

func dumpPrefix(t *testing.T, s *Store, prefix byte) string {
	it, err := s.DB().NewIter(&pebble.IterOptions{LowerBound: []byte{prefix}, UpperBound: []byte{prefix + 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var out strings.Builder
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		if prefix == prefixAttach {
			fmt.Fprintf(&out, "lease=%d key=%q\n", int64(binary.BigEndian.Uint64(k[1:9])), k[9:])
			continue
		}
		if prefix == prefixLog {
			fmt.Fprintf(&out, "rev=%d key=%q\n", logKeyRev(k), it.Value())
			continue
		}
		uk, err := decodeUserKey(k)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := decodeVersionValue(it.Value())
		if err != nil {
			t.Fatal(err)
		}
		if rec.tombstone {
			fmt.Fprintf(&out, "%q@%d tombstone\n", uk, versionKeyRev(k))
			continue
		}
		fmt.Fprintf(&out, "%q@%d %q c=%d v=%d l=%d\n", uk, versionKeyRev(k), rec.value, rec.create, rec.version, rec.lease)
	}
	if out.Len() == 0 {
		return "(empty)\n"
	}
	return out.String()
}

func fmtRange(rr *RangeResult, err error) string {
	if err != nil {
		return err.Error() + "\n"
	}
	var out strings.Builder
	for i := range rr.KVs {
		out.WriteString(fmtKV(&rr.KVs[i]) + "\n")
	}
	fmt.Fprintf(&out, "count=%d rev=%d\n", rr.Count, rr.Rev)
	return out.String()
}

func fmtKV(kv *mvccpb.KeyValue) string {
	if kv == nil {
		return "none"
	}
	return fmt.Sprintf("%q=%q c=%d m=%d v=%d l=%d", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease)
}

func arg(d *datadriven.TestData, name string) []byte {
	return unq(argStr(d, name))
}

func argStr(d *datadriven.TestData, name string) string {
	for _, a := range d.CmdArgs {
		if a.Key == name && len(a.Vals) > 0 {
			return a.Vals[0]
		}
	}
	return ""
}

func argInt(d *datadriven.TestData, name string) int {
	s := argStr(d, name)
	if s == "" {
		return 0
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		panic(err)
	}
	return n
}

func argEnd(d *datadriven.TestData) []byte {
	if !d.HasArg("end") {
		return nil
	}
	e := argStr(d, "end")
	if e == "*" {
		return []byte{}
	}
	return unq(e)
}

func unq(s string) []byte {
	return []byte(strings.ReplaceAll(s, `\0`, "\x00"))
}
