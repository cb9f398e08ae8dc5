package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const sample = `# Header, not a description.
#
# @schema.root
# title: sample
# properties:
#   global: {type: object}
# $defs:
#   port: {type: integer, minimum: 1, maximum: 65535}
#   stringMap: {type: object, additionalProperties: {type: string}}
#   image:
#     required: [repository]
#     properties:
#       repository: {minLength: 1}
#       pullPolicy: {enum: [Always, Never]}
# @schema.root

# -- Number of replicas.
# @schema {minimum: 1}
replicas: 2

server:
  # -- Port to listen on (--port,
  # --listen-port).
  # @schema {$ref: port}
  port: 8080
  # -- Pod labels.
  # @schema {$ref: stringMap}
  labels:
    app: x
  # -- Resources, an example.
  resources:
    requests: {cpu: 1m}
  # @schema {$ref: image}
  image:
    # -- Repository.
    repository: example/server
    # -- Pull policy.
    pullPolicy: Always
  # -- Log level or verbosity.
  # @schema
  # anyOf:
  #   - {type: string, enum: [info, debug]}
  #   - {type: integer, minimum: 1}
  # @schema
  logLevel: info
  # -- Ratio.
  ratio: 0.5
  # -- Flags.
  flags: ["--a"]
`

const sampleSchema = `{
  "title": "sample",
  "type": "object",
  "properties": {
    "replicas": {"description": "Number of replicas.", "type": "integer", "minimum": 1},
    "server": {
      "type": "object",
      "properties": {
        "port": {"description": "Port to listen on (--port, --listen-port).", "type": "integer", "minimum": 1, "maximum": 65535},
        "labels": {"description": "Pod labels.", "type": "object", "additionalProperties": {"type": "string"}},
        "resources": {"description": "Resources, an example.", "type": "object"},
        "image": {
          "type": "object",
          "required": ["repository"],
          "properties": {
            "repository": {"description": "Repository.", "type": "string", "minLength": 1},
            "pullPolicy": {"description": "Pull policy.", "type": "string", "enum": ["Always", "Never"]}
          },
          "additionalProperties": false
        },
        "logLevel": {"description": "Log level or verbosity.", "anyOf": [{"type": "string", "enum": ["info", "debug"]}, {"type": "integer", "minimum": 1}]},
        "ratio": {"description": "Ratio.", "type": "number"},
        "flags": {"description": "Flags.", "type": "array"}
      },
      "additionalProperties": false
    },
    "global": {"type": "object"}
  },
  "additionalProperties": false
}`

// TestGenerate checks every rule of the generator on a small values file:
// sections allow no other key, documented blocks are free-form examples,
// types are inferred from defaults, one-line and block fragments and $refs
// are merged, the root fragment adds properties, and "# --flag" lines
// continue a description.
func TestGenerate(t *testing.T) {
	g, err := Generate([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	var got, want any
	if err := json.Unmarshal(g.Schema, &got); err != nil {
		t.Fatalf("schema is not JSON: %v\n%s", err, g.Schema)
	}
	if err := json.Unmarshal([]byte(sampleSchema), &want); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("schema mismatch (-want +got):\n%s", diff)
	}
	// values.yaml's order is kept, keywords come in a fixed order.
	if s := string(g.Schema); strings.Index(s, `"replicas"`) > strings.Index(s, `"server"`) ||
		strings.Index(s, `"port"`) > strings.Index(s, `"labels"`) ||
		!strings.HasPrefix(s, "{\n  \"title\": \"sample\",\n  \"type\": \"object\",") {
		t.Errorf("schema order:\n%s", s)
	}
	for _, row := range []string{
		"| `replicas` | integer | `2` | Number of replicas. |\n",
		"| `server.port` | integer | `8080` | Port to listen on (--port, --listen-port). |\n",
		"| `server.labels` | object | `{\"app\":\"x\"}` | Pod labels. |\n",
		"| `server.image.repository` | string | `\"example/server\"` | Repository. |\n",
		"| `server.logLevel` | string or integer | `\"info\"` | Log level or verbosity. |\n",
	} {
		if !strings.Contains(g.Table, row) {
			t.Errorf("table lacks %q:\n%s", row, g.Table)
		}
	}
	if strings.Contains(g.Table, "`server` ") || strings.Contains(g.Table, "server.image` ") {
		t.Errorf("a section has a row:\n%s", g.Table)
	}
}

// TestGenerateErrors checks that mistakes in values.yaml's annotations fail
// with the line and what is wrong.
func TestGenerateErrors(t *testing.T) {
	for _, c := range []struct{ name, values, want string }{
		{"undocumented value", "a:\n  b: 1\n", `line 2: a.b has no "# --" description`},
		{"undocumented empty map", "a: {}\n", `line 1: a has no "# --" description`},
		{"unknown $ref", "# -- A.\n# @schema {$ref: nope}\na: 1\n", `$ref "nope": no such definition`},
		{"bad fragment", "# -- A.\n# @schema {minimum: [}\na: 1\n", "line 2: # @schema"},
		{"unclosed block", "# -- A.\n# @schema\n# minimum: 1\na: 1\n", "without its closing"},
		{"fragment not a mapping", "# -- A.\n# @schema [1]\na: 1\n", "must be a mapping"},
		{"null default without a type", "# -- A.\na: null\n", "cannot infer a type for !!null"},
		{"not a mapping", "- a\n", "the values must be a mapping"},
		{"cyclic $ref", "# @schema.root {$defs: {x: {$ref: x}}}\n\n# -- A.\n# @schema {$ref: x}\na: 1\n", "refers to itself"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Generate([]byte(c.values))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Generate() = %v, want an error containing %q", err, c.want)
			}
		})
	}
}

// TestRun writes the schema and the README table, and a second run changes
// nothing.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	values, schema, readme := filepath.Join(dir, "values.yaml"), filepath.Join(dir, "values.schema.json"), filepath.Join(dir, "README.md")
	if err := os.WriteFile(values, []byte(sample), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(readme, []byte("# Chart\n\n"+BeginMarker+"\n"+EndMarker+"\nend\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(values, schema, readme); err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(readme)
	if !strings.Contains(string(first), BeginMarker+"\n<!-- Generated by hack/values-schema") || !strings.HasSuffix(string(first), "|\n"+EndMarker+"\nend\n") {
		t.Errorf("README:\n%s", first)
	}
	firstSchema, _ := os.ReadFile(schema)
	if err := run(values, schema, readme); err != nil {
		t.Fatal(err)
	}
	second, _ := os.ReadFile(readme)
	secondSchema, _ := os.ReadFile(schema)
	if string(second) != string(first) || string(secondSchema) != string(firstSchema) {
		t.Error("a second run changed the output")
	}
}

// TestChartCurrent fails when charts/kalpc's schema or README table is not
// what the generator makes of its values.yaml (hack/generate.sh fixes it).
func TestChartCurrent(t *testing.T) {
	src, err := os.ReadFile("../../charts/kalpc/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	g, err := Generate(src)
	if err != nil {
		t.Fatal(err)
	}
	schema, err := os.ReadFile("../../charts/kalpc/values.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(g.Schema), string(schema)); diff != "" {
		t.Errorf("charts/kalpc/values.schema.json is out of date; run hack/generate.sh (-want +got):\n%s", diff)
	}
	readme, err := os.ReadFile("../../charts/kalpc/README.md")
	if err != nil {
		t.Fatal(err)
	}
	want, err := Splice(readme, g.Table)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), string(readme)); diff != "" {
		t.Errorf("charts/kalpc/README.md is out of date; run hack/generate.sh (-want +got):\n%s", diff)
	}
}
