package mvcc

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// Leases in the store. mvcc keeps two things for the lease layer, without
// knowing what a lease is:
//
//   - one opaque record per lease id, written and deleted through a Batch
//     (the applier owns its encoding);
//   - the lease → key attachments, maintained by WriteTxn.Put and
//     DeleteRange from the lease field of the versions they write, in the
//     same batch, so that they always agree with the latest versions.
//
// Revoking a lease reads its attached keys with one range scan, and a
// restart reads only the lease records: no scan of all keys, as etcd
// needs to rebuild its lease → key map.

// SetLease stores the record of lease id with the batch.
func (b *Batch) SetLease(id int64, record []byte) error {
	b.buf = appendLeaseKey(b.buf[:0], id)
	return b.b.Set(b.buf, record, nil)
}

// DeleteLease removes the record of lease id with the batch. The lease's
// attachments go with the deletion of its keys (see WriteTxn.DeleteRange).
func (b *Batch) DeleteLease(id int64) error {
	b.buf = appendLeaseKey(b.buf[:0], id)
	return b.b.Delete(b.buf, nil)
}

// ForEachLease calls f with every stored lease record, in id order (as
// unsigned 64-bit numbers). record is only valid during the call.
func (s *Store) ForEachLease(f func(id int64, record []byte) error) error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixLease}, UpperBound: []byte{prefixLease + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		if len(k) != 9 {
			return fmt.Errorf("mvcc: lease record key %x: %w", k, errCorruptKey)
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		if err := f(int64(binary.BigEndian.Uint64(k[1:])), v); err != nil {
			return err
		}
	}
	return it.Error()
}

// LeaseKeys returns the keys attached to lease id as of this transaction
// (the batch's earlier writes included), in byte order.
func (t *WriteTxn) LeaseKeys(id int64) ([][]byte, error) {
	it, err := t.b.view()
	if err != nil {
		return nil, err
	}
	return leaseKeys(it, true, id)
}

// LeaseKeys returns the keys attached to lease id at the view's revision
// (attachments are kept for the newest revision only, which is the view's),
// in byte order.
func (t *ReadTxn) LeaseKeys(id int64) ([][]byte, error) {
	return leaseKeys(t.it, false, id)
}

func leaseKeys(it *pebble.Iterator, batchView bool, id int64) ([][]byte, error) {
	lower, upper := attachBounds(id)
	setBounds(it, batchView, lower, upper)
	var keys [][]byte
	for ok := it.First(); ok; ok = it.Next() {
		keys = append(keys, append([]byte(nil), it.Key()[len(lower):]...))
	}
	return keys, it.Error()
}

// attach records that key is attached to lease id.
func (t *WriteTxn) attach(id int64, key []byte) error {
	t.b.buf = appendAttachKey(t.b.buf[:0], id, key)
	return t.b.b.Set(t.b.buf, nil, nil)
}

// detach removes the record that key is attached to lease id.
func (t *WriteTxn) detach(id int64, key []byte) error {
	t.b.buf = appendAttachKey(t.b.buf[:0], id, key)
	return t.b.b.Delete(t.b.buf, nil)
}

// OnFinish registers f to run once the batch is finished: after a
// successful Commit (committed true, the writes are durable and visible to
// readers) or when it is aborted or its commit fails (committed false).
// Hooks run in registration order on the goroutine that finishes the batch;
// they let state kept outside the store (the lessor) follow the batch only
// once it is durable.
func (b *Batch) OnFinish(f func(committed bool)) {
	b.hooks = append(b.hooks, f)
}

// Lease returns the record of lease id as this batch sees it (its own
// writes included), or nil.
func (b *Batch) Lease(id int64) ([]byte, error) {
	b.buf = appendLeaseKey(b.buf[:0], id)
	v, closer, err := b.b.Get(b.buf)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	return append([]byte(nil), v...), nil
}
