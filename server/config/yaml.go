package config

import (
	"fmt"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

// applyYAML layers a YAML document over c and returns every problem found:
// syntax errors, unknown or duplicate keys, values of the wrong shape and
// values that do not parse. Keys not in the document keep their value in c.
//
// NB: the document is walked as a yaml.Node rather than decoded with
// KnownFields, because yaml.v3 drops KnownFields inside custom unmarshalers
// (which sizes like "256MiB" need) and stops at the first error, while we
// want every problem, each with its line and dotted key.
func (c *Config) applyYAML(data []byte, source string) []error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return []error{fmt.Errorf("%s: %w", source, err)}
	}
	if len(doc.Content) == 0 { // empty file or only comments
		return nil
	}
	d := yamlDecoder{source: source, cfg: c}
	d.mapping(deref(doc.Content[0]), reflect.TypeFor[Config](), "")
	return d.errs
}

type yamlDecoder struct {
	source string
	cfg    *Config
	errs   []error
}

func (d *yamlDecoder) errorf(n *yaml.Node, key, format string, args ...any) {
	where := d.source
	if n != nil {
		where = fmt.Sprintf("%s:%d", d.source, n.Line)
	}
	if key != "" {
		where += ": " + key
	}
	d.errs = append(d.errs, fmt.Errorf("%s: %s", where, fmt.Sprintf(format, args...)))
}

// deref follows YAML aliases (*anchor) to the node they name.
func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// mapping decodes a YAML mapping into the struct type t found at prefix.
func (d *yamlDecoder) mapping(n *yaml.Node, t reflect.Type, prefix string) {
	key := strings.TrimSuffix(prefix, ".")
	if isNull(n) { // "grpc:" with nothing under it keeps the defaults
		return
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, key, "expected a mapping of settings, got %s", kindName(n))
		return
	}
	fields := make(map[string]reflect.StructField, t.NumField())
	for i := range t.NumField() {
		if name := yamlName(t.Field(i)); name != "" {
			fields[name] = t.Field(i)
		}
	}
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), deref(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, key, "keys must be plain names, got %s", kindName(k))
			continue
		}
		path := prefix + k.Value
		if seen[k.Value] {
			d.errorf(k, path, "duplicate key")
			continue
		}
		seen[k.Value] = true
		f, ok := fields[k.Value]
		if !ok {
			d.errorf(k, path, "unknown key%s", suggest(prefix, k.Value))
			continue
		}
		if isStructList(f.Type) { // only at the top level: f.Index is from Config
			d.structList(v, reflect.ValueOf(d.cfg).Elem().FieldByIndex(f.Index), path)
			continue
		}
		if f.Type.Kind() == reflect.Struct {
			d.mapping(v, f.Type, path+".")
			continue
		}
		d.leaf(v, leafByKey[path])
	}
}

// leaf decodes one value. A null value ("key:" or "key: ~") clears the
// setting, so an explicit empty list can be written either way.
func (d *yamlDecoder) leaf(n *yaml.Node, l *leaf) {
	v := l.value(d.cfg)
	switch {
	case isNull(n):
		v.SetZero()
	case n.Kind == yaml.SequenceNode && l.typ.Kind() == reflect.Slice:
		items := make([]string, 0, len(n.Content))
		for _, item := range n.Content {
			item = deref(item)
			if item.Kind != yaml.ScalarNode || isNull(item) {
				d.errorf(item, l.key, "list items must be single values, got %s", kindName(item))
				return
			}
			items = append(items, strings.TrimSpace(item.Value))
		}
		v.Set(reflect.ValueOf(items))
	case n.Kind == yaml.ScalarNode:
		if err := l.set(d.cfg, n.Value); err != nil {
			d.errorf(n, l.key, "%v", err)
		}
	default:
		d.errorf(n, l.key, "expected a single value, got %s", kindName(n))
	}
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "null"
		}
		return fmt.Sprintf("%q", n.Value)
	default:
		return "an unsupported node"
	}
}

// suggest names the known key an unknown one was probably meant to be: the
// same name in another section, or the etcd flag spelling with dashes.
func suggest(prefix, name string) string {
	under := strings.ReplaceAll(name, "-", "_")
	if l, ok := leafByKey[prefix+under]; ok {
		return fmt.Sprintf(" (did you mean %q?)", l.key)
	}
	for i := range leaves {
		if k := leaves[i].key; strings.HasSuffix(k, "."+under) || k == under {
			return fmt.Sprintf(" (did you mean %q?)", k)
		}
	}
	return ""
}
