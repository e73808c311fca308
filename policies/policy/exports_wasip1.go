//go:build wasip1

package policy

import "unsafe"

var buffer []byte

// view returns the n bytes the host wrote at ptr, which must be the buffer
// policy_buffer handed out (anything else gets nil: a malformed request).
func view(ptr, n int32) []byte {
	if n <= 0 || len(buffer) == 0 || ptr != int32(uintptr(unsafe.Pointer(&buffer[0]))) || int(n) > len(buffer) {
		return nil
	}
	return buffer[:n:n]
}

func packed(b []byte) int64 {
	if len(b) == 0 {
		return 0
	}
	return int64(uintptr(unsafe.Pointer(&b[0])))<<32 | int64(len(b))
}

//go:wasmexport metastore_policy_v1
func abiMarker() {}

//go:wasmexport policy_buffer
func policyBuffer(size int32) int32 {
	if size < 0 {
		return 0
	}
	if cap(buffer) < int(size) {
		buffer = make([]byte, size)
	}
	buffer = buffer[:cap(buffer)]
	return int32(uintptr(unsafe.Pointer(&buffer[0])))
}

//go:wasmexport policy_init
func policyInit(ptr, n int32) int32 {
	// Settings are copied: handlers may keep them, and the buffer is reused.
	settings := append([]byte(nil), view(ptr, n)...)
	if err := RunInit(settings); err != nil {
		setReason(err.Error())
		return 1
	}
	return 0
}

//go:wasmexport policy_authorize
func policyAuthorize(ptr, n int32) int32 {
	v, reason := RunAuthorize(view(ptr, n))
	if v == VerdictDeny {
		setReason(reason)
	}
	return int32(v)
}

//go:wasmexport policy_admit
func policyAdmit(ptr, n int32) int32 {
	v, reason, mutation := RunAdmit(view(ptr, n))
	switch v {
	case VerdictDeny:
		setReason(reason)
	case VerdictMutated:
		lastMutation = mutation
	}
	return int32(v)
}

//go:wasmexport policy_reason
func policyReason() int64 { return packed(lastReason) }

//go:wasmexport policy_mutation
func policyMutation() int64 { return packed(lastMutation) }
