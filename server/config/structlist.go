package config

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// isStructList reports whether t is a list of structs (policies, tenants):
// those are YAML-only and decoded by structList, not by the leaf machinery.
func isStructList(t reflect.Type) bool {
	return t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct
}

// structList decodes a YAML list of mappings into the slice v, with the
// same strictness as the rest of the file: unknown keys, duplicates and bad
// values are reported with their line and path (policies[1].limits.memory).
func (d *yamlDecoder) structList(n *yaml.Node, v reflect.Value, key string) {
	if isNull(n) {
		v.SetZero()
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, key, "expected a list, got %s", kindName(n))
		return
	}
	out := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		d.structValue(deref(item), out.Index(i), key+"["+strconv.Itoa(i)+"]")
	}
	v.Set(out)
	// Module paths are relative to the config file.
	if key == "policies" {
		for i := range d.cfg.Policies {
			m := &d.cfg.Policies[i].Module
			if *m != "" && !filepath.IsAbs(*m) {
				*m = filepath.Join(filepath.Dir(d.source), *m)
			}
		}
	}
}

func (d *yamlDecoder) structValue(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, key, "expected a mapping, got %s", kindName(n))
		return
	}
	t := v.Type()
	fields := map[string]int{}
	for i := range t.NumField() {
		if name := yamlName(t.Field(i)); name != "" {
			fields[name] = i
		}
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := deref(n.Content[i]), deref(n.Content[i+1])
		path := key + "." + k.Value
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, key, "keys must be plain names, got %s", kindName(k))
			continue
		}
		if seen[k.Value] {
			d.errorf(k, path, "duplicate key")
			continue
		}
		seen[k.Value] = true
		idx, ok := fields[k.Value]
		if !ok {
			names := make([]string, 0, len(fields))
			for name := range fields {
				names = append(names, name)
			}
			d.errorf(k, path, "unknown key (known: %s)", strings.Join(slices.Sorted(slices.Values(names)), ", "))
			continue
		}
		f, fv := t.Field(idx), v.Field(idx)
		switch {
		case f.Tag.Get("config") == "json":
			var x any
			if err := val.Decode(&x); err != nil {
				d.errorf(val, path, "%v", err)
				continue
			}
			b, err := json.Marshal(x)
			if err != nil {
				d.errorf(val, path, "not representable as JSON: %v", err)
				continue
			}
			fv.SetBytes(b)
		case f.Type.Kind() == reflect.Struct:
			if !isNull(val) {
				d.structValue(val, fv, path)
			}
		case isNull(val):
			fv.SetZero()
		case val.Kind == yaml.SequenceNode && f.Type.Kind() == reflect.Slice:
			items := make([]string, 0, len(val.Content))
			for _, item := range val.Content {
				item = deref(item)
				if item.Kind != yaml.ScalarNode || isNull(item) {
					d.errorf(item, path, "list items must be single values, got %s", kindName(item))
					return
				}
				items = append(items, strings.TrimSpace(item.Value))
			}
			fv.Set(reflect.ValueOf(items))
		case val.Kind == yaml.ScalarNode:
			if err := setValue(fv, val.Value, f.Tag.Get("unit") == "bytes"); err != nil {
				d.errorf(val, path, "%v", err)
			}
		default:
			d.errorf(val, path, "expected a single value, got %s", kindName(val))
		}
	}
}
