package mvcc

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

func TestScanAndDeleteMeta(t *testing.T) {
	fs := vfs.NewMem()
	open := func() *Store {
		s, err := Open("db", Options{FS: fs, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a/2", "a/1", "a0", "a", "b/1", "a/\xff"} {
		if err := b.SetMeta(name, []byte("v"+name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	scan := func(prefix string) string {
		var out []string
		if err := s.ScanMeta(prefix, func(name string, value []byte) error {
			out = append(out, fmt.Sprintf("%q=%q", name, value))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return strings.Join(out, " ")
	}
	if got, want := scan("a/"), `"a/1"="va/1" "a/2"="va/2" "a/\xff"="va/\xff"`; got != want {
		t.Errorf("scan a/ = %s, want %s", got, want)
	}
	b, _ = s.NewBatch()
	if err := b.DeleteMeta("a/2"); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open()
	defer s.Close()
	if got, want := scan("a/"), `"a/1"="va/1" "a/\xff"="va/\xff"`; got != want {
		t.Errorf("after delete and reopen: scan a/ = %s, want %s", got, want)
	}
	if v, _ := s.Meta("a/2"); v != nil {
		t.Errorf("Meta(a/2) = %q after delete", v)
	}
	if got := scan("b"); got != `"b/1"="vb/1"` {
		t.Errorf("scan b = %s", got)
	}
}
