package wasmhost

import (
	"fmt"
	"io/fs"
	"os"
	"runtime/debug"
	"sync"
)

// The compilation cache holds native code that wazero maps and runs as it
// finds it, and the host's marks of modules it validated: whoever can
// write there can run code in the server or have an invalid module skip
// the validator. So the host uses a cache directory only if it is this
// user's and no one else may write to it, and trusts a mark only if it is
// a regular file of this user, written by no one else, holding its own
// name (keyed by the module's digest, the memory limit and the wazero
// version whose validator accepted it).

// trustedDir refuses a directory another user owns or may write to.
func trustedDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	return ownedPrivately(dir, fi)
}

// ownedPrivately: fi (of path) is owned by this user and not writable by
// group or others.
func ownedPrivately(path string, fi fs.FileInfo) error {
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("%s is writable by other users (mode %v); the compilation cache must not be", path, perm)
	}
	if uid, ok := fileOwner(fi); ok && uid != os.Geteuid() {
		return fmt.Errorf("%s is owned by uid %d, not this process's %d; the compilation cache must be", path, uid, os.Geteuid())
	}
	return nil
}

// trustedMark says whether the validation mark at path was written by
// this host for key.
func trustedMark(path, key string) bool {
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != int64(len(key)) || ownedPrivately(path, fi) != nil {
		return false
	}
	b, err := os.ReadFile(path)
	return err == nil && string(b) == key
}

// writeMark writes a validation mark atomically (a crash leaves none, not
// a partial one).
func writeMark(dir, path, key string) {
	f, err := os.CreateTemp(dir, ".mark-*")
	if err != nil {
		return
	}
	_, err = f.WriteString(key)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
}

// validatorVersion names the validator in marks: a mark of another wazero
// version is not trusted.
var validatorVersion = sync.OnceValue(func() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/tetratelabs/wazero" {
				return d.Version
			}
		}
	}
	return "unknown"
})
