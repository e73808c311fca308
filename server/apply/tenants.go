package apply

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/metastore-dev/metastore/mvcc"
)

// Tenant is a configured tenant as apply sees it: the owner of every key
// with Prefix. Prefixes do not nest (the configuration checks it).
type Tenant struct {
	Name   string
	Prefix []byte
}

// tenantCounter holds one tenant's usage. Apply writes it; the server reads
// it concurrently for quota checks and policy requests.
type tenantCounter struct {
	Tenant
	keys  atomic.Int64
	bytes atomic.Int64 // keys plus values
	// One request's changes, accumulated by account (apply goroutine only).
	marked        bool
	dKeys, dBytes int64
}

// tenantUsage counts live keys and their bytes per tenant. The counts are
// kept by Apply from each request's changes and persisted in the same batch
// (metadata "tenant/<name>": prefix, keys, bytes), so they survive restarts
// exactly; a tenant whose prefix changed, or that is new, is counted from
// the store at start-up.
type tenantUsage struct {
	list []*tenantCounter
}

// ErrTenantUnknown is returned by Usage for a name that is not configured.
var ErrTenantUnknown = errors.New("apply: unknown tenant")

func metaTenant(name string) string { return "tenant/" + name }

func encodeUsage(t *tenantCounter) []byte {
	b := binary.AppendUvarint(nil, uint64(len(t.Prefix)))
	b = append(b, t.Prefix...)
	b = binary.AppendVarint(b, t.keys.Load())
	return binary.AppendVarint(b, t.bytes.Load())
}

// decodeUsage returns the persisted counts if they were kept for prefix.
func decodeUsage(raw, prefix []byte) (keys, byts int64, ok bool) {
	n, k := binary.Uvarint(raw)
	if k <= 0 || uint64(len(raw)-k) < n {
		return 0, 0, false
	}
	p, rest := raw[k:k+int(n)], raw[k+int(n):]
	if !bytes.Equal(p, prefix) {
		return 0, 0, false
	}
	keys, k1 := binary.Varint(rest)
	if k1 <= 0 {
		return 0, 0, false
	}
	byts, k2 := binary.Varint(rest[k1:])
	if k2 <= 0 {
		return 0, 0, false
	}
	return keys, byts, true
}

func prefixEnd(prefix []byte) []byte {
	for i := len(prefix) - 1; i >= 0; i-- {
		if prefix[i] < 0xff {
			end := append([]byte(nil), prefix[:i+1]...)
			end[i]++
			return end
		}
	}
	return []byte{} // mvcc: every key >= prefix
}

// countPrefix counts the live keys under prefix and their bytes, a page at
// a time.
func countPrefix(s *mvcc.Store, prefix []byte) (keys, byts int64, err error) {
	tx, err := s.Read()
	if err != nil {
		return 0, 0, err
	}
	defer tx.End()
	end := prefixEnd(prefix)
	from := prefix
	for {
		rr, err := tx.Range(context.Background(), from, end, mvcc.RangeOptions{Limit: 1000})
		if err != nil {
			return 0, 0, err
		}
		for i := range rr.KVs {
			keys++
			byts += int64(len(rr.KVs[i].Key) + len(rr.KVs[i].Value))
		}
		if len(rr.KVs) < 1000 {
			return keys, byts, nil
		}
		from = append(bytes.Clone(rr.KVs[len(rr.KVs)-1].Key), 0)
	}
}

func loadTenants(s *mvcc.Store, tenants []Tenant) (*tenantUsage, error) {
	u := &tenantUsage{}
	for _, t := range tenants {
		c := &tenantCounter{Tenant: Tenant{Name: t.Name, Prefix: bytes.Clone(t.Prefix)}}
		raw, err := s.Meta(metaTenant(t.Name))
		if err != nil {
			return nil, err
		}
		keys, byts, ok := decodeUsage(raw, t.Prefix)
		if !ok {
			if keys, byts, err = countPrefix(s, t.Prefix); err != nil {
				return nil, fmt.Errorf("apply: count tenant %q: %w", t.Name, err)
			}
		}
		c.keys.Store(keys)
		c.bytes.Store(byts)
		u.list = append(u.list, c)
	}
	return u, nil
}

func (u *tenantUsage) of(key []byte) *tenantCounter {
	if u == nil {
		return nil
	}
	for _, t := range u.list {
		if bytes.HasPrefix(key, t.Prefix) {
			return t
		}
	}
	return nil
}

// account applies one request's changes to the counters and persists the
// tenants whose usage moved, in the same batch.
func (u *tenantUsage) account(b *mvcc.Batch, changes []mvccpb.Event) error {
	if u == nil || len(u.list) == 0 || len(changes) == 0 {
		return nil
	}
	var touched []*tenantCounter
	for i := range changes {
		ev := &changes[i]
		t := u.of(ev.Kv.Key)
		if t == nil {
			continue
		}
		if !t.marked {
			t.marked = true
			touched = append(touched, t)
		}
		switch {
		case ev.Type == mvccpb.PUT && ev.PrevKv == nil:
			t.dKeys++
			t.dBytes += int64(len(ev.Kv.Key) + len(ev.Kv.Value))
		case ev.Type == mvccpb.PUT:
			t.dBytes += int64(len(ev.Kv.Value) - len(ev.PrevKv.Value))
		case ev.Type == mvccpb.DELETE && ev.PrevKv != nil:
			t.dKeys--
			t.dBytes -= int64(len(ev.PrevKv.Key) + len(ev.PrevKv.Value))
		}
	}
	var err error
	for _, t := range touched {
		if (t.dKeys != 0 || t.dBytes != 0) && err == nil {
			t.keys.Add(t.dKeys)
			t.bytes.Add(t.dBytes)
			err = b.SetMeta(metaTenant(t.Name), encodeUsage(t))
		}
		t.marked, t.dKeys, t.dBytes = false, 0, 0
	}
	return err
}

// TenantUsage returns the tenant owning key and its current usage; name is
// "" when no tenant owns key.
func (a *Applier) TenantUsage(key []byte) (name string, keys, bytes int64) {
	if t := a.tenants.Load().of(key); t != nil {
		return t.Name, t.keys.Load(), t.bytes.Load()
	}
	return "", 0, 0
}

// Usage returns a tenant's usage by name.
func (a *Applier) Usage(name string) (keys, bytes int64, err error) {
	if u := a.tenants.Load(); u != nil {
		for _, t := range u.list {
			if t.Name == name {
				return t.keys.Load(), t.bytes.Load(), nil
			}
		}
	}
	return 0, 0, ErrTenantUnknown
}

// SetTenants replaces the counted tenants, keeping the counts of every
// tenant whose name and prefix are unchanged; a new tenant, or one whose
// prefix moved, is counted from the store and persisted in b, and a
// removed tenant's record is deleted; the new list counts from b's commit
// on. It must run on the apply goroutine
// between batches (Loop.SetTenants), so that the count sees every write before it
// and accounting picks it up from the next write on.
func (a *Applier) SetTenants(s *mvcc.Store, b *mvcc.Batch, tenants []Tenant) error {
	old := a.tenants.Load()
	byName := map[string]*tenantCounter{}
	if old != nil {
		for _, c := range old.list {
			byName[c.Name] = c
		}
	}
	u := &tenantUsage{}
	kept := map[string]bool{}
	for _, t := range tenants {
		kept[t.Name] = true
		if c := byName[t.Name]; c != nil && bytes.Equal(c.Prefix, t.Prefix) {
			u.list = append(u.list, c)
			continue
		}
		keys, byts, err := countPrefix(s, t.Prefix)
		if err != nil {
			return fmt.Errorf("apply: count tenant %q: %w", t.Name, err)
		}
		c := &tenantCounter{Tenant: Tenant{Name: t.Name, Prefix: bytes.Clone(t.Prefix)}}
		c.keys.Store(keys)
		c.bytes.Store(byts)
		if err := b.SetMeta(metaTenant(t.Name), encodeUsage(c)); err != nil {
			return err
		}
		u.list = append(u.list, c)
	}
	for name := range byName {
		if !kept[name] {
			// A record left behind would be trusted if the tenant came back
			// later with the same prefix, after writes it did not count.
			if err := b.DeleteMeta(metaTenant(name)); err != nil {
				return err
			}
		}
	}
	if len(u.list) == 0 {
		u = nil
	}
	// Published only once the records are durable, before the next batch.
	b.OnFinish(func(committed bool) {
		if committed {
			a.tenants.Store(u)
		}
	})
	return nil
}

// tenantWrite makes a put under a tenant's prefix read its previous value,
// which account needs the size of (mvcc.WriteTxn.PutPrev leaves it out
// when nobody asks for it).
type tenantWrite struct {
	*mvcc.WriteTxn
	u *tenantUsage
}

func (w tenantWrite) PutPrev(key, value []byte, lease int64, prevValue bool) (int64, *mvccpb.KeyValue, error) {
	return w.WriteTxn.PutPrev(key, value, lease, prevValue || w.u.of(key) != nil)
}

// writeView is tx as the KV operations see it.
func (a *Applier) writeView(tx *mvcc.WriteTxn) WriteView {
	if u := a.tenants.Load(); u != nil && len(u.list) > 0 {
		return tenantWrite{tx, u}
	}
	return tx
}
