//go:build !(linux && cgo)

package main

// trimCHeap does nothing where the C heap is not glibc's (or there is none).
func trimCHeap() {}
