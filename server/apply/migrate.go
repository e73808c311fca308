package apply

// EncodeLeaseRecord returns the stored record of a lease with the given TTL
// and last checkpointed remaining TTL (0: none, -1: expired), for a
// migration that writes leases into a store directly.
func EncodeLeaseRecord(ttl, remaining int64) []byte { return encodeLease(ttl, remaining) }

// DecodeLeaseRecord is EncodeLeaseRecord's inverse.
func DecodeLeaseRecord(rec []byte) (ttl, remaining int64, err error) { return decodeLease(rec) }
