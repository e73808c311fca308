package config

import (
	"os"
	"reflect"
	"testing"

	"gopkg.in/yaml.v3"
)

const templatePath = "../../configs/metastore.yaml"

// TestTemplateEqualsDefault keeps configs/metastore.yaml, the documented
// template, from drifting from Default().
func TestTemplateEqualsDefault(t *testing.T) {
	data, err := os.ReadFile(templatePath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &Config{} // not Default(): every value must come from the file
	if errs := cfg.applyYAML(data, templatePath); len(errs) > 0 {
		t.Fatalf("template does not parse: %v", errs)
	}
	if !reflect.DeepEqual(normalize(cfg), normalize(Default())) {
		t.Errorf("template differs from Default():\ntemplate %+v\ndefault  %+v", cfg, Default())
	}
}

// TestTemplateListsEveryKey checks each key is written out (with its
// comment) in the template, not merely defaulted.
func TestTemplateListsEveryKey(t *testing.T) {
	data, err := os.ReadFile(templatePath)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	found := map[string]*yaml.Node{}
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if v.Kind == yaml.MappingNode {
				walk(v, prefix+k.Value+".")
				continue
			}
			found[prefix+k.Value] = k
		}
	}
	walk(doc.Content[0], "")
	for _, l := range leaves {
		k, ok := found[l.key]
		switch {
		case !ok:
			t.Errorf("template lacks %s", l.key)
		case k.HeadComment == "":
			t.Errorf("template key %s has no comment", l.key)
		}
	}
}

// normalize makes nil and empty lists compare equal: the template writes
// [] where Default() leaves a list nil.
func normalize(c *Config) *Config {
	c2 := *c
	if len(c2.Policies) == 0 {
		c2.Policies = nil
	}
	if len(c2.Tenants) == 0 {
		c2.Tenants = nil
	}
	for _, l := range leaves {
		v := l.value(&c2)
		if l.typ.Kind() == reflect.Slice && v.Len() == 0 {
			v.SetZero()
		}
	}
	return &c2
}
