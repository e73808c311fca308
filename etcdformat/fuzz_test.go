package etcdformat

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzOpen: a damaged database (with --skip-hash-check, so nothing but the
// reader stands between it and bbolt) is refused or read, never a crash.
func FuzzOpen(f *testing.F) {
	dir := f.TempDir()
	db, _ := writeSample(f, dir)
	good, err := os.ReadFile(db)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(uint32(0), uint8(0), uint32(0))
	f.Add(uint32(4096+20), uint8(0xff), uint32(0))
	f.Add(uint32(3*4096+100), uint8(1), uint32(len(good)/2))
	f.Fuzz(func(t *testing.T, off uint32, xor uint8, cut uint32) {
		data := append([]byte(nil), good...)
		data[int(off)%len(data)] ^= xor
		if cut > 0 {
			data = data[:int(cut)%len(data)]
		}
		tmp := t.TempDir()
		file := filepath.Join(tmp, "db")
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := Open(file, OpenOptions{SkipHashCheck: true, TempDir: tmp})
		if err != nil {
			return
		}
		defer r.Close()
		_ = r.ForEachVersion(func(*Version) error { return nil })
		_ = r.ForEachLease(func(Lease) error { return nil })
		_, _ = r.Auth()
		_, _ = r.Meta()
	})
}
