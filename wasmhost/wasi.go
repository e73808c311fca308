package wasmhost

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"
)

// The host implements wasi_snapshot_preview1 itself instead of linking
// wazero's: a policy gets stdio and nothing else (no preopened directory, no
// socket, no arguments or environment), a fake clock and a deterministic
// random source, and every function either does O(1) work or charges the
// work it does by size (charge: fuel and the call's deadline), in chunks, so
// that no host call can run long after its deadline. See RATIONALE.md
// ("WASI owned by the host").
//
// Every preview1 function exists, so a module that imports one still links
// (Go's os package imports path_open, fd_readdir …); the ones that would
// need a file or a socket answer EBADF (no such descriptor) without reading
// their arguments from memory.
const wasiModule = "wasi_snapshot_preview1"

// WASI errno values used here.
const (
	errnoSuccess  = 0
	errnoBadf     = 8
	errnoFault    = 21
	errnoInval    = 28
	errnoNosys    = 52
	errnoNotsock  = 57
	errnoNotsup   = 58
	errnoSpipe    = 70
	errnoNotdir   = 54
	fdStdin       = 0
	fdStdout      = 1
	fdStderr      = 2
	fileCharDev   = 2 // filetype character_device
	clockRealtime = 0
	clockMonotime = 1
)

// Costs, in fuel units (a unit is about one guest instruction):
// a host function charges per byte or per element it touches, in chunks, so
// that the deadline is checked between chunks.
const (
	wasiChunkBytes = 64 << 10 // bytes handled between two checks
	wasiChunkItems = 4096     // iovecs or subscriptions between two checks
	wasiByteShift  = 4        // 1 unit per 16 bytes
	wasiItemCost   = 8        // per iovec or subscription
	// maxStderrPerCall bounds what one fd_write passes on to the log; the
	// rest is counted as written and dropped (the log is rate-limited
	// anyway).
	maxStderrPerCall = 8 << 10
)

// fake clock: the wall clock starts at 2022-01-01T00:00:00Z and, like the
// monotonic clock, advances 1 ms at every reading (wazero's sandbox clock).
const (
	fakeEpoch = 1640995200 * int64(1e9)
	fakeStep  = int64(1e6)
)

type wasiFunc struct {
	name    string
	params  []api.ValueType
	results []api.ValueType
	fn      func(inst *instance, m api.Module, s []uint64) uint32
}

func ps(n int) []api.ValueType {
	t := make([]api.ValueType, n)
	for i := range t {
		t[i] = i32
	}
	return t
}

func sig(types ...api.ValueType) []api.ValueType { return types }

var (
	r32 = []api.ValueType{i32}

	// constant answers for functions needing a resource the sandbox lacks
	badf = func(*instance, api.Module, []uint64) uint32 { return errnoBadf }
	// stdio descriptors exist but do not support the operation; others
	// do not exist.
	onStdio = func(errno uint32) func(*instance, api.Module, []uint64) uint32 {
		return func(_ *instance, _ api.Module, s []uint64) uint32 {
			if uint32(s[0]) <= fdStderr {
				return errno
			}
			return errnoBadf
		}
	}
)

var wasiFuncs = []wasiFunc{
	{"args_get", ps(2), r32, wasiNothing},
	{"args_sizes_get", ps(2), r32, wasiZeroSizes},
	{"environ_get", ps(2), r32, wasiNothing},
	{"environ_sizes_get", ps(2), r32, wasiZeroSizes},
	{"clock_res_get", ps(2), r32, wasiClockRes},
	{"clock_time_get", sig(i32, i64, i32), r32, wasiClockTime},
	{"fd_advise", sig(i32, i64, i64, i32), r32, onStdio(errnoSpipe)},
	{"fd_allocate", sig(i32, i64, i64), r32, onStdio(errnoNotsup)},
	{"fd_close", ps(1), r32, onStdio(errnoSuccess)},
	{"fd_datasync", ps(1), r32, onStdio(errnoInval)},
	{"fd_fdstat_get", ps(2), r32, wasiFdstat},
	{"fd_fdstat_set_flags", ps(2), r32, onStdio(errnoSuccess)},
	{"fd_fdstat_set_rights", sig(i32, i64, i64), r32, onStdio(errnoNotsup)},
	{"fd_filestat_get", ps(2), r32, wasiFilestat},
	{"fd_filestat_set_size", sig(i32, i64), r32, onStdio(errnoInval)},
	{"fd_filestat_set_times", sig(i32, i64, i64, i32), r32, onStdio(errnoNotsup)},
	{"fd_pread", sig(i32, i32, i32, i64, i32), r32, onStdio(errnoSpipe)},
	{"fd_prestat_get", ps(2), r32, badf},
	{"fd_prestat_dir_name", ps(3), r32, badf},
	{"fd_pwrite", sig(i32, i32, i32, i64, i32), r32, onStdio(errnoSpipe)},
	{"fd_read", ps(4), r32, wasiRead},
	{"fd_readdir", sig(i32, i32, i32, i64, i32), r32, onStdio(errnoNotdir)},
	{"fd_renumber", ps(2), r32, onStdio(errnoNotsup)},
	{"fd_seek", sig(i32, i64, i32, i32), r32, onStdio(errnoSpipe)},
	{"fd_sync", ps(1), r32, onStdio(errnoInval)},
	{"fd_tell", ps(2), r32, onStdio(errnoSpipe)},
	{"fd_write", ps(4), r32, wasiWrite},
	// path functions need a directory descriptor; there are none, so
	// they fail before the path is looked at.
	{"path_create_directory", ps(3), r32, onStdio(errnoNotdir)},
	{"path_filestat_get", ps(5), r32, onStdio(errnoNotdir)},
	{"path_filestat_set_times", sig(i32, i32, i32, i32, i64, i64, i32), r32, onStdio(errnoNotdir)},
	{"path_link", ps(7), r32, onStdio(errnoNotdir)},
	{"path_open", sig(i32, i32, i32, i32, i32, i64, i64, i32, i32), r32, onStdio(errnoNotdir)},
	{"path_readlink", ps(6), r32, onStdio(errnoNotdir)},
	{"path_remove_directory", ps(3), r32, onStdio(errnoNotdir)},
	{"path_rename", ps(6), r32, onStdio(errnoNotdir)},
	{"path_symlink", ps(5), r32, badf},
	{"path_unlink_file", ps(3), r32, onStdio(errnoNotdir)},
	{"poll_oneoff", ps(4), r32, wasiPoll},
	{"proc_exit", ps(1), nil, nil}, // wasiExit, no result
	{"proc_raise", ps(1), r32, func(*instance, api.Module, []uint64) uint32 { return errnoNosys }},
	{"random_get", ps(2), r32, wasiRandom},
	{"sched_yield", nil, r32, func(*instance, api.Module, []uint64) uint32 { return errnoSuccess }},
	{"sock_accept", ps(3), r32, onStdio(errnoNotsock)},
	{"sock_recv", ps(6), r32, onStdio(errnoNotsock)},
	{"sock_send", ps(5), r32, onStdio(errnoNotsock)},
	{"sock_shutdown", ps(2), r32, onStdio(errnoNotsock)},
}

// wasiNames is the set of functions a module may import from wasiModule.
var wasiNames = func() map[string]bool {
	m := make(map[string]bool, len(wasiFuncs))
	for _, f := range wasiFuncs {
		m[f.name] = true
	}
	return m
}()

// instantiateWASI adds the host's wasi_snapshot_preview1 to rt.
func instantiateWASI(ctx context.Context, rt wazero.Runtime) error {
	b := rt.NewHostModuleBuilder(wasiModule)
	for _, f := range wasiFuncs {
		var gf api.GoModuleFunc
		if f.name == "proc_exit" {
			gf = wasiExit
		} else {
			fn := f.fn
			gf = func(ctx context.Context, m api.Module, s []uint64) {
				inst, _ := ctx.Value(instanceKey{}).(*instance)
				if inst == nil {
					panic(errNoInstance)
				}
				s[0] = uint64(fn(inst, m, s))
			}
		}
		b.NewFunctionBuilder().WithGoModuleFunction(gf, f.params, f.results).Export(f.name)
	}
	_, err := b.Instantiate(ctx)
	return err
}

var errNoInstance = fmt.Errorf("wasmhost: guest called the host outside a policy call")

func wasiNothing(*instance, api.Module, []uint64) uint32 { return errnoSuccess }

// wasiZeroSizes answers args_sizes_get and environ_sizes_get: none.
func wasiZeroSizes(_ *instance, m api.Module, s []uint64) uint32 {
	mem := m.Memory()
	if !mem.WriteUint32Le(uint32(s[0]), 0) || !mem.WriteUint32Le(uint32(s[1]), 0) {
		return errnoFault
	}
	return errnoSuccess
}

func wasiClockRes(_ *instance, m api.Module, s []uint64) uint32 {
	var res uint64
	switch uint32(s[0]) {
	case clockRealtime:
		res = 1000 // 1 µs, as wazero's sandbox clock
	case clockMonotime:
		res = 1
	default:
		return errnoInval
	}
	if !m.Memory().WriteUint64Le(uint32(s[1]), res) {
		return errnoFault
	}
	return errnoSuccess
}

func wasiClockTime(inst *instance, m api.Module, s []uint64) uint32 {
	var t int64
	switch uint32(s[0]) {
	case clockRealtime:
		inst.wall += fakeStep
		t = fakeEpoch + inst.wall - fakeStep
	case clockMonotime:
		inst.nano += fakeStep
		t = inst.nano - fakeStep
	default:
		return errnoInval
	}
	if !m.Memory().WriteUint64Le(uint32(s[2]), uint64(t)) {
		return errnoFault
	}
	return errnoSuccess
}

func wasiFdstat(_ *instance, m api.Module, s []uint64) uint32 {
	fd := uint32(s[0])
	if fd > fdStderr {
		return errnoBadf
	}
	var st [24]byte
	st[0] = fileCharDev
	rights := uint64(1<<6 | 1<<27) // fd_write, poll_fd_readwrite
	if fd == fdStdin {
		rights = 1<<1 | 1<<27 // fd_read, poll_fd_readwrite
	}
	binary.LittleEndian.PutUint64(st[8:], rights)
	if !m.Memory().Write(uint32(s[1]), st[:]) {
		return errnoFault
	}
	return errnoSuccess
}

func wasiFilestat(_ *instance, m api.Module, s []uint64) uint32 {
	if uint32(s[0]) > fdStderr {
		return errnoBadf
	}
	var st [64]byte
	st[16] = fileCharDev
	if !m.Memory().Write(uint32(s[1]), st[:]) {
		return errnoFault
	}
	return errnoSuccess
}

// wasiRead: stdin is empty (end of file); nothing else can be read. The
// iovecs are not looked at.
func wasiRead(_ *instance, m api.Module, s []uint64) uint32 {
	if uint32(s[0]) != fdStdin {
		return errnoBadf
	}
	if !m.Memory().WriteUint32Le(uint32(s[3]), 0) {
		return errnoFault
	}
	return errnoSuccess
}

// wasiWrite: stdout is discarded, stderr goes to the log (at most
// maxStderrPerCall bytes of each call); the guest is told everything was
// written. The iovec list and the bytes are charged as they are walked.
func wasiWrite(inst *instance, m api.Module, s []uint64) uint32 {
	fd, iovs, n, out := uint32(s[0]), uint32(s[1]), uint32(s[2]), uint32(s[3])
	if fd != fdStdout && fd != fdStderr {
		return errnoBadf
	}
	mem := m.Memory()
	if uint64(iovs)+8*uint64(n) > uint64(mem.Size()) {
		return errnoFault
	}
	var total uint64
	forwarded := 0
	for i := uint32(0); i < n; i++ {
		if i%wasiChunkItems == 0 {
			inst.chargeHost(int64(min(n-i, wasiChunkItems)) * wasiItemCost) // the items of this chunk
		}
		ptr, _ := mem.ReadUint32Le(iovs + 8*i)
		l, _ := mem.ReadUint32Le(iovs + 8*i + 4)
		if uint64(ptr)+uint64(l) > uint64(mem.Size()) {
			return errnoFault
		}
		total += uint64(l)
		if fd == fdStderr && forwarded < maxStderrPerCall && l > 0 {
			k := min(int(l), maxStderrPerCall-forwarded)
			b, _ := mem.Read(ptr, uint32(k))
			inst.chargeHost(int64(k) >> wasiByteShift)
			inst.stderr.Write(b)
			forwarded += k
		}
	}
	if total > 1<<32-1 { // nwritten is a u32, as writev's sum may not overflow
		return errnoInval
	}
	if !mem.WriteUint32Le(out, uint32(total)) {
		return errnoFault
	}
	return errnoSuccess
}

// wasiRandom fills the buffer from the instance's deterministic source,
// a chunk at a time, charging each chunk.
func wasiRandom(inst *instance, m api.Module, s []uint64) uint32 {
	ptr, n := uint32(s[0]), uint32(s[1])
	mem := m.Memory()
	buf, ok := mem.Read(ptr, n)
	if !ok {
		return errnoFault
	}
	if inst.rng == nil {
		inst.rng = rand.NewChaCha8([32]byte{'m', 'e', 't', 'a', 's', 't', 'o', 'r', 'e'})
	}
	for len(buf) > 0 {
		k := min(len(buf), wasiChunkBytes)
		inst.chargeHost(1 + int64(k)>>wasiByteShift)
		inst.rng.Read(buf[:k])
		buf = buf[k:]
	}
	return errnoSuccess
}

// wasiPoll answers every subscription at once: a clock has elapsed (the
// sandbox's sleep returns immediately, as wazero's does), stdin is at end of
// file, stdout and stderr are writable, any other descriptor is EBADF.
// Subscriptions are charged as they are walked.
func wasiPoll(inst *instance, m api.Module, s []uint64) uint32 {
	in, out, n, result := uint32(s[0]), uint32(s[1]), uint32(s[2]), uint32(s[3])
	if n == 0 {
		return errnoInval
	}
	mem := m.Memory()
	size := uint64(mem.Size())
	if uint64(in)+48*uint64(n) > size || uint64(out)+32*uint64(n) > size {
		return errnoFault
	}
	for i := uint32(0); i < n; i++ {
		if i%wasiChunkItems == 0 {
			inst.chargeHost(int64(min(n-i, wasiChunkItems)) * wasiItemCost) // the items of this chunk
		}
		sub, _ := mem.Read(in+48*i, 48)
		var ev [32]byte
		copy(ev[0:8], sub[0:8]) // userdata
		tag := sub[8]
		ev[10] = tag
		var errno uint16
		switch tag {
		case 0: // clock
		case 1, 2: // fd_read, fd_write
			fd := binary.LittleEndian.Uint32(sub[16:])
			switch {
			case tag == 1 && fd == fdStdin, tag == 2 && (fd == fdStdout || fd == fdStderr):
			default:
				errno = errnoBadf
			}
		default:
			errno = errnoInval
		}
		binary.LittleEndian.PutUint16(ev[8:], errno)
		mem.Write(out+32*i, ev[:])
	}
	if !mem.WriteUint32Le(result, n) {
		return errnoFault
	}
	return errnoSuccess
}

// wasiExit ends the guest: the call fails with a sys.ExitError (a trap).
func wasiExit(ctx context.Context, m api.Module, s []uint64) {
	code := uint32(s[0])
	// NB: closing the module marks it so a later call fails at once; the
	// instance is discarded anyway after the failed call.
	_ = m.CloseWithExitCode(ctx, code)
	panic(sys.NewExitError(code))
}
