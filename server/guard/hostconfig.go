package guard

import (
	"github.com/metastore-dev/metastore/server/config"
	"github.com/metastore-dev/metastore/wasmhost"
)

// HostConfig converts a policies: entry into the host's Config: the server
// loads its policies with it and `metastore policy eval --config` too.
func HostConfig(pol *config.Policy, maxRequestBytes int) (wasmhost.Config, error) {
	onErr, err := wasmhost.ParseOnError(pol.OnError)
	if err != nil {
		return wasmhost.Config{}, err
	}
	l := pol.Limits
	return wasmhost.Config{
		Name: pol.Name, Path: pol.Module, SHA256: pol.SHA256, Settings: pol.Settings, OnError: onErr,
		Limits: wasmhost.Limits{
			ModuleBytes: l.ModuleSize, MemoryBytes: l.Memory,
			AuthorizeTimeout: l.AuthorizeTimeout, AdmitTimeout: l.AdmitTimeout, InitTimeout: l.InitTimeout, PoolWait: l.PoolWait,
			Instances: l.Instances, ReasonBytes: l.ReasonBytes, Fuel: l.Fuel,
			CodeBytes: l.CodeSize, Functions: l.Functions, Globals: l.Globals, LocalsPerFunction: l.LocalsPerFunction,
			Tables: l.Tables, TableElements: l.TableElements, StackBytes: l.StackSize, CallDepth: l.CallDepth,
			TotalMemoryBytes: l.TotalMemory,
			FunctionBytes:    int(l.FunctionBytes), Locals: l.Locals, BlocksPerFunction: l.BlocksPerFunction, CompileCost: l.CompileCost,
			// A request is at most the largest client request plus the
			// header; a mutation replaces a client request.
			RequestBytes: maxRequestBytes + 64<<10, MutationBytes: maxRequestBytes,
		},
	}, nil
}
