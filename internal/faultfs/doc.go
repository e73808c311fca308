// Package faultfs is a Pebble filesystem for tests of disk faults: an
// in-memory filesystem that can be crashed (only synced data survives a
// CrashClone) and made to fail, as a full disk (every write fails with
// ENOSPC) or a failing disk (every fsync fails with EIO). mvcc, the apply
// loop and the Raft log storage each test that a failed write is never
// acknowledged; they share this so that all three meet the same faults.
package faultfs
