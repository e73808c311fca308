//go:build wasip1

package policy

import "unsafe"

//go:wasmimport metastore log
func hostLog(level int32, ptr unsafe.Pointer, n int32)

func writeLog(level int32, msg string) {
	if len(msg) == 0 {
		return
	}
	hostLog(level, unsafe.Pointer(unsafe.StringData(msg)), int32(len(msg)))
}
