package mvcc

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Snapshot file format
//
// A snapshot is a POSIX ustar archive of a Pebble checkpoint of the store,
// followed by the SHA-256 of the archive (32 bytes):
//
//	tar( "METASTORE-SNAPSHOT"  the marker: "metastore snapshot v1\nrevision N\n"
//	     <checkpoint files>    MANIFEST, OPTIONS, sstables, WAL, ... as Pebble wrote them )
//	sha256(tar)
//
// A ustar archive is a whole number of 512-byte blocks, so the stream has the
// shape etcdctl checks for a bbolt snapshot (512·n + 32 bytes with a SHA-256
// trailer), and `etcdctl snapshot save` stores it unchanged. The archive is
// restored with RestoreSnapshot (`metastore snapshot restore`).
const (
	snapshotMarker  = "METASTORE-SNAPSHOT"
	snapshotVersion = "metastore snapshot v1"
	tarBlock        = 512
)

// ErrBadSnapshot is returned for a file that is not a valid metastore snapshot.
var ErrBadSnapshot = errors.New("mvcc: not a valid metastore snapshot")

// Snapshot is a point-in-time copy of the store on disk (a Pebble checkpoint,
// hard links where possible), ready to be streamed. Close removes it.
type Snapshot struct {
	fs    vfs.FS
	dir   string
	rev   int64
	files []snapshotFile
	size  int64
}

type snapshotFile struct {
	name string
	size int64
}

// Snapshot checkpoints the store into dir, which must not exist. The copy is
// consistent: it holds exactly the batches committed before the call.
func (s *Store) Snapshot(dir string) (*Snapshot, error) {
	fs := s.opts.FS
	if fs == nil {
		fs = vfs.Default
	}
	// NB: the revision is read before the checkpoint, which may hold newer
	// batches; the marker only reports it.
	rev := s.rev.Load()
	// NB: a Raft member's log shares the database under its own prefix
	// ('R'); it is the member's, not the store's, and stays out.
	spans := []pebble.CheckpointSpan{{Start: nil, End: []byte{raftLogPrefix}}, {Start: []byte{raftLogPrefix + 1}, End: []byte{0xff, 0xff}}}
	if err := s.db.Checkpoint(dir, pebble.WithFlushedWAL(), pebble.WithRestrictToSpans(spans)); err != nil {
		return nil, fmt.Errorf("mvcc: checkpoint: %w", err)
	}
	snap := &Snapshot{fs: fs, dir: dir, rev: rev}
	names, err := fs.List(dir)
	if err != nil {
		snap.Close()
		return nil, err
	}
	sort.Strings(names)
	snap.files = append(snap.files, snapshotFile{name: snapshotMarker, size: int64(len(snap.marker()))})
	for _, name := range names {
		st, err := fs.Stat(fs.PathJoin(dir, name))
		if err != nil {
			snap.Close()
			return nil, err
		}
		if st.IsDir() {
			// Pebble checkpoints are flat; anything else is not ours to copy.
			continue
		}
		snap.files = append(snap.files, snapshotFile{name: name, size: st.Size()})
	}
	for _, f := range snap.files {
		snap.size += tarBlock + (f.size+tarBlock-1)/tarBlock*tarBlock
	}
	snap.size += 2 * tarBlock // the archive's end marker
	return snap, nil
}

func (s *Snapshot) marker() []byte {
	return []byte(snapshotVersion + "\nrevision " + strconv.FormatInt(s.rev, 10) + "\n")
}

// Size is the exact length of the archive WriteTo writes, without the
// SHA-256 trailer.
func (s *Snapshot) Size() int64 { return s.size }

// WriteTo writes the archive (not the trailer) to w.
func (s *Snapshot) WriteTo(w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	tw := tar.NewWriter(cw)
	for _, f := range s.files {
		hdr := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     f.name,
			Size:     f.size,
			Mode:     0o600,
			ModTime:  time.Unix(0, 0),
			Format:   tar.FormatUSTAR,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return cw.n, err
		}
		if f.name == snapshotMarker {
			if _, err := tw.Write(s.marker()); err != nil {
				return cw.n, err
			}
			continue
		}
		file, err := s.fs.Open(s.fs.PathJoin(s.dir, f.name))
		if err != nil {
			return cw.n, err
		}
		_, err = io.Copy(tw, io.LimitReader(file, f.size))
		file.Close()
		if err != nil {
			return cw.n, err
		}
	}
	if err := tw.Close(); err != nil {
		return cw.n, err
	}
	if cw.n != s.size {
		// A checkpoint file changed size under us; never send a snapshot
		// whose length disagrees with what was announced.
		return cw.n, fmt.Errorf("mvcc: snapshot wrote %d bytes, announced %d", cw.n, s.size)
	}
	return cw.n, nil
}

// Close removes the checkpoint.
func (s *Snapshot) Close() error { return s.fs.RemoveAll(s.dir) }

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// RestoreSnapshot checks a snapshot file of size bytes (archive and SHA-256
// trailer) read from r and unpacks it into dir, which must not exist or be
// empty. It returns the revision recorded in the snapshot. The directory is
// then a store that Open accepts. Nothing is left in dir on error if dir did
// not exist before.
func RestoreSnapshot(r io.ReaderAt, size int64, dir string) (int64, error) {
	if size < sha256.Size+2*tarBlock || (size-sha256.Size)%tarBlock != 0 {
		return 0, fmt.Errorf("%w: size %d is not 512·n + 32", ErrBadSnapshot, size)
	}
	n := size - sha256.Size
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(r, 0, n)); err != nil {
		return 0, err
	}
	want := make([]byte, sha256.Size)
	if _, err := r.ReadAt(want, n); err != nil {
		return 0, err
	}
	if !bytes.Equal(h.Sum(nil), want) {
		return 0, fmt.Errorf("%w: SHA-256 mismatch (file corrupted or truncated)", ErrBadSnapshot)
	}

	fs := vfs.Default
	if entries, err := fs.List(dir); err == nil && len(entries) > 0 {
		return 0, fmt.Errorf("mvcc: restore: %s is not empty", dir)
	}
	if err := fs.MkdirAll(dir, 0o700); err != nil {
		return 0, err
	}
	ok := false
	defer func() {
		if !ok {
			fs.RemoveAll(dir)
		}
	}()
	tr := tar.NewReader(io.NewSectionReader(r, 0, n))
	rev := int64(-1)
	for i := 0; ; i++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
		}
		if i == 0 {
			if hdr.Name != snapshotMarker {
				return 0, fmt.Errorf("%w: no %s marker (is it an etcd snapshot?)", ErrBadSnapshot, snapshotMarker)
			}
			body, err := io.ReadAll(io.LimitReader(tr, 1<<10))
			if err != nil {
				return 0, err
			}
			if rev, err = parseMarker(string(body)); err != nil {
				return 0, err
			}
			continue
		}
		if hdr.Typeflag != tar.TypeReg || hdr.Name != path.Base(hdr.Name) || hdr.Name == "." || hdr.Name == ".." || strings.ContainsAny(hdr.Name, `/\`) {
			return 0, fmt.Errorf("%w: unexpected entry %q", ErrBadSnapshot, hdr.Name)
		}
		if err := writeFileSynced(fs, fs.PathJoin(dir, hdr.Name), tr); err != nil {
			return 0, err
		}
	}
	if rev < 0 {
		return 0, fmt.Errorf("%w: empty archive", ErrBadSnapshot)
	}
	d, err := fs.OpenDir(dir)
	if err != nil {
		return 0, err
	}
	err = d.Sync()
	d.Close()
	if err != nil {
		return 0, err
	}
	ok = true
	return rev, nil
}

func parseMarker(body string) (int64, error) {
	lines := strings.Split(strings.TrimSpace(body), "\n")
	if len(lines) < 2 || lines[0] != snapshotVersion || !strings.HasPrefix(lines[1], "revision ") {
		return 0, fmt.Errorf("%w: unsupported snapshot format %q", ErrBadSnapshot, lines[0])
	}
	rev, err := strconv.ParseInt(strings.TrimPrefix(lines[1], "revision "), 10, 64)
	if err != nil || rev < 0 {
		return 0, fmt.Errorf("%w: bad revision line %q", ErrBadSnapshot, lines[1])
	}
	return rev, nil
}

func writeFileSynced(fs vfs.FS, name string, r io.Reader) error {
	f, err := fs.Create(name, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
