package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"

	yaml "go.yaml.in/yaml/v3"
)

// omap is a JSON object that keeps its keys in order, so that the schema
// lists the values in values.yaml's order.
type omap struct {
	keys []string
	m    map[string]any
}

func (o *omap) get(k string) (any, bool) {
	if o == nil || o.m == nil {
		return nil, false
	}
	v, ok := o.m[k]
	return v, ok
}

func (o *omap) set(k string, v any) {
	if o.m == nil {
		o.m = map[string]any{}
	}
	if _, ok := o.m[k]; !ok {
		o.keys = append(o.keys, k)
	}
	o.m[k] = v
}

func (o *omap) del(k string) {
	if _, ok := o.m[k]; !ok {
		return
	}
	delete(o.m, k)
	o.keys = slices.DeleteFunc(o.keys, func(e string) bool { return e == k })
}

// clone copies o deeply.
func (o *omap) clone() *omap {
	out := &omap{}
	if o == nil {
		return out
	}
	for _, k := range o.keys {
		out.set(k, cloneValue(o.m[k]))
	}
	return out
}

func cloneValue(v any) any {
	switch v := v.(type) {
	case *omap:
		return v.clone()
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = cloneValue(e)
		}
		return out
	}
	return v
}

// merge returns base with over merged in: mappings merge key by key,
// anything else in over replaces what base has.
func merge(base, over *omap) *omap {
	out := base.clone()
	if over == nil {
		return out
	}
	for _, k := range over.keys {
		ov := over.m[k]
		if bm, ok := out.m[k].(*omap); ok {
			if om, ok := ov.(*omap); ok {
				out.set(k, merge(bm, om))
				continue
			}
		}
		out.set(k, cloneValue(ov))
	}
	return out
}

// MarshalJSON writes the keys in order.
func (o *omap) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range o.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kj, err := marshal(k)
		if err != nil {
			return nil, err
		}
		vj, err := marshal(o.m[k])
		if err != nil {
			return nil, err
		}
		b.Write(kj)
		b.WriteByte(':')
		b.Write(vj)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// marshal is json.Marshal without escaping <, > and &, which are common
// in descriptions ("<fullname>") and harmless in a schema file.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// keywordOrder is the order of a schema's keywords in the output; others
// follow in their own order.
var keywordOrder = []string{
	"$schema", "title", "description", "type", "anyOf", "oneOf", "enum",
	"minimum", "maximum", "minLength", "maxLength", "pattern", "minItems", "maxItems",
	"items", "required", "properties", "additionalProperties",
}

// ordered returns a schema with its keywords in keywordOrder, recursively
// (the names under properties keep their order).
func ordered(v any) any {
	switch v := v.(type) {
	case *omap:
		out := &omap{}
		rank := func(k string) int {
			if i := slices.Index(keywordOrder, k); i >= 0 {
				return i
			}
			return len(keywordOrder)
		}
		keys := slices.Clone(v.keys)
		slices.SortStableFunc(keys, func(a, b string) int { return rank(a) - rank(b) })
		for _, k := range keys {
			if k == "properties" {
				props := &omap{}
				if pm, ok := v.m[k].(*omap); ok {
					for _, name := range pm.keys {
						props.set(name, ordered(pm.m[name]))
					}
					out.set(k, props)
					continue
				}
			}
			out.set(k, ordered(v.m[k]))
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = ordered(e)
		}
		return out
	}
	return v
}

// fromNode decodes a YAML node, keeping the order of mappings.
func fromNode(n *yaml.Node) (any, error) {
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return fromNode(n.Content[0])
	case yaml.MappingNode:
		out := &omap{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("line %d: a mapping key must be a scalar", n.Content[i].Line)
			}
			v, err := fromNode(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			out.set(n.Content[i].Value, v)
		}
		return out, nil
	case yaml.SequenceNode:
		out := []any{}
		for _, c := range n.Content {
			v, err := fromNode(c)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case yaml.AliasNode:
		return fromNode(n.Alias)
	}
	var v any
	if err := n.Decode(&v); err != nil {
		return nil, fmt.Errorf("line %d: %w", n.Line, err)
	}
	return v, nil
}
