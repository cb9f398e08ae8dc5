package main

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServingLogLine reads the real sidecar's "sidecar serving" line from
// its log and checks that every key appears once (the pod key was written
// twice: by the logger cmd/sidecar builds and by the line itself).
func TestServingLogLine(t *testing.T) {
	c := newCluster(t)
	p := c.newPod("logger", "logger", nil)
	f, err := os.Open(filepath.Join(p.dir, "sidecar.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	found := false
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, `"msg":"sidecar serving"`) {
			continue
		}
		found = true
		keys, err := jsonKeys(line)
		if err != nil {
			t.Fatalf("log line %s: %v", line, err)
		}
		count := map[string]int{}
		for _, k := range keys {
			count[k]++
		}
		for k, n := range count {
			if n != 1 {
				t.Errorf("key %q appears %d times in %s", k, n, line)
			}
		}
		if count["pod"] != 1 || count["podUID"] != 1 {
			t.Errorf("log line %s lacks pod or podUID", line)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil || m["pod"] != c.ns+"/logger" || m["podUID"] != p.uid {
			t.Errorf("log line %s: pod %v, podUID %v; want %s/logger, %s (%v)", line, m["pod"], m["podUID"], c.ns, p.uid, err)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if !found {
		t.Fatal(`no "sidecar serving" line in the sidecar's log`)
	}
}

// jsonKeys returns the top-level keys of a JSON object in order, repeats
// included (encoding/json keeps only the last of a repeated key).
func jsonKeys(s string) ([]string, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	if _, err := dec.Token(); err != nil { // {
		return nil, err
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		keys = append(keys, tok.(string))
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
	}
	return keys, nil
}
