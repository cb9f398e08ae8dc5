package v1alpha1_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
)

// selectorFields are the fields of a ConnectionPort's spec that hold a label
// selector, with the path the API server names them by.
var selectorFields = []struct {
	path string
	set  func(*kalpcv1alpha1.ConnectionPort, kalpcv1alpha1.LabelSelector)
}{
	{"spec.servers", func(p *kalpcv1alpha1.ConnectionPort, s kalpcv1alpha1.LabelSelector) { p.Spec.Servers = s }},
	{"spec.clients[0].namespaceSelector", func(p *kalpcv1alpha1.ConnectionPort, s kalpcv1alpha1.LabelSelector) {
		p.Spec.Clients = []kalpcv1alpha1.ClientRule{{NamespaceSelector: &s}}
	}},
	{"spec.clients[1].podSelector", func(p *kalpcv1alpha1.ConnectionPort, s kalpcv1alpha1.LabelSelector) {
		p.Spec.Clients = []kalpcv1alpha1.ClientRule{{Namespaces: []string{"a"}}, {Namespaces: []string{"b"}, PodSelector: &s}}
	}},
}

// dryRunCreate asks the API server to admit p without storing it.
func dryRunCreate(t *testing.T, p *kalpcv1alpha1.ConnectionPort) error {
	t.Helper()
	return k8s.Create(t.Context(), p, client.DryRunAll)
}

// TestSelectorValidation checks that every selector of a port is checked
// at admission (issue 18): a selector the operator and the sidecar could
// not parse is refused with an answer that names the field and says what is
// wrong, and nothing else (no "some validation rules were not checked").
func TestSelectorValidation(t *testing.T) {
	longName := strings.Repeat("n", 63)
	longPrefix := strings.Repeat("p", 253)
	tests := []struct {
		name string
		sel  kalpcv1alpha1.LabelSelector
		// want is the answer after the field's path; empty: accepted.
		want string
		// contains is true when the API server adds its "some validation
		// rules were not checked" line: a list over its bound is a schema
		// error that stops CEL rules, so want is only part of the answer.
		contains bool
	}{
		{name: "empty selects everything"},
		{name: "every operator", sel: kalpcv1alpha1.LabelSelector{MatchExpressions: []kalpcv1alpha1.LabelSelectorRequirement{
			{Key: "a", Operator: metav1.LabelSelectorOpIn, Values: []string{"x"}},
			{Key: "b", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"y", "z"}},
			{Key: "c", Operator: metav1.LabelSelectorOpExists},
			{Key: "d", Operator: metav1.LabelSelectorOpDoesNotExist},
		}}},
		{name: "longest key and value, empty value", sel: kalpcv1alpha1.LabelSelector{
			MatchLabels: map[string]string{longPrefix + "/" + longName: strings.Repeat("v", 63), "kubernetes.io/metadata.name": ""},
			MatchExpressions: []kalpcv1alpha1.LabelSelectorRequirement{
				{Key: longPrefix + "/" + longName, Operator: metav1.LabelSelectorOpIn, Values: []string{"", strings.Repeat("v", 63), "A-b_c.9"}},
			},
		}},
		{name: "every list at its bound", sel: fullSelector(kalpcv1alpha1.MaxSelectorMatchLabels, kalpcv1alpha1.MaxSelectorMatchExpressions, kalpcv1alpha1.MaxSelectorValues)},

		{name: "In without values", sel: expression("app", "In"),
			want: ".matchExpressions[0].values: Required value: values must not be empty when the operator is In or NotIn"},
		{name: "NotIn without values", sel: expression("app", "NotIn"),
			want: ".matchExpressions[0].values: Required value: values must not be empty when the operator is In or NotIn"},
		{name: "Exists with values", sel: expression("app", "Exists", "x"),
			want: ".matchExpressions[0].values: Forbidden: values must be empty when the operator is Exists or DoesNotExist"},
		{name: "DoesNotExist with values", sel: expression("app", "DoesNotExist", "x"),
			want: ".matchExpressions[0].values: Forbidden: values must be empty when the operator is Exists or DoesNotExist"},
		{name: "unknown operator", sel: expression("app", "Equals", "x"),
			want: ".matchExpressions[0].operator: Invalid value: operator must be In, NotIn, Exists or DoesNotExist"},
		{name: "operator in lower case", sel: expression("app", "in", "x"),
			want: ".matchExpressions[0].operator: Invalid value: operator must be In, NotIn, Exists or DoesNotExist"},
		{name: "empty operator", sel: expression("app", "", "x"),
			want: ".matchExpressions[0].operator: Invalid value: operator must be In, NotIn, Exists or DoesNotExist"},
		{name: "key with a space", sel: expression("my app", "Exists"),
			want: keyError("my app")},
		{name: "empty key", sel: expression("", "Exists"),
			want: keyError("")},
		{name: "key name over 63 characters", sel: expression(longName+"n", "Exists"),
			want: keyError(longName + "n")},
		{name: "key prefix not a DNS subdomain", sel: expression("Example.com/app", "Exists"),
			want: keyError("Example.com/app")},
		{name: "key prefix over 253 characters", sel: expression(longPrefix+"p/app", "Exists"),
			want: keyError(longPrefix + "p/app")},
		{name: "key with two slashes", sel: expression("example.com/a/b", "Exists"),
			want: keyError("example.com/a/b")},
		{name: "value with a space", sel: expression("app", "In", "ok", "not ok"),
			want: `.matchExpressions[0].values[1]: Invalid value: "not ok": ` + valueMessage("%s.matchExpressions[0].values[1]")},
		{name: "value over 63 characters", sel: expression("app", "NotIn", strings.Repeat("v", 64)),
			want: `.matchExpressions[0].values[0]: Invalid value: "` + strings.Repeat("v", 64) + `": ` + valueMessage("%s.matchExpressions[0].values[0]")},
		{name: "matchLabels key with a slash at the start", sel: kalpcv1alpha1.LabelSelector{MatchLabels: map[string]string{"/app": "x"}},
			want: `.matchLabels: Invalid value: key "/app" must be a label key: ` + keyMessage[len("key must be a label key: "):]},
		{name: "matchLabels value ending in a dash", sel: kalpcv1alpha1.LabelSelector{MatchLabels: map[string]string{"app": "x-"}},
			want: `.matchLabels.app: Invalid value: "x-": ` + valueMessage("%s.matchLabels.app")},

		{name: "too many matchLabels", sel: fullSelector(kalpcv1alpha1.MaxSelectorMatchLabels+1, 0, 0), contains: true,
			want: ".matchLabels: Too many: 33: must have at most 32 items"},
		{name: "too many matchExpressions", sel: fullSelector(0, kalpcv1alpha1.MaxSelectorMatchExpressions+1, 1), contains: true,
			want: ".matchExpressions: Too many: 33: must have at most 32 items"},
		{name: "too many values", sel: fullSelector(0, 1, kalpcv1alpha1.MaxSelectorValues+1), contains: true,
			want: ".matchExpressions[0].values: Too many: 65: must have at most 64 items"},
	}
	for _, field := range selectorFields {
		for i, tt := range tests {
			t.Run(field.path+"/"+tt.name, func(t *testing.T) {
				name := fmt.Sprintf("selector-%d", i)
				p := port(name, func(p *kalpcv1alpha1.ConnectionPort) { field.set(p, tt.sel) })
				err := dryRunCreate(t, p)
				switch {
				case tt.want == "" && err != nil:
					t.Fatalf("Create() = %v, want accepted", err)
				case tt.want == "":
					return
				case err == nil:
					t.Fatalf("Create() accepted, want %s%s", field.path, tt.want)
				}
				want := fmt.Sprintf("ConnectionPort.kalpc.io %q is invalid: %s%s", name, field.path, strings.ReplaceAll(tt.want, "%s", field.path))
				if tt.contains {
					if !strings.Contains(err.Error(), want[strings.Index(want, ": ")+2:]) {
						t.Fatalf("Create() = %v\nwant error containing %s", err, want)
					}
					return
				}
				if err.Error() != want {
					t.Fatalf("Create() = %v\nwant exactly   %s", err, want)
				}
			})
		}
	}
}

const keyMessage = "key must be a label key: a name of at most 63 letters, digits, '-', '_' or '.', " +
	"starting and ending with a letter or digit, optionally after a DNS subdomain prefix of at most 253 characters and '/'"

// keyError is the answer after a field's path to key in its first
// requirement.
func keyError(key string) string {
	return fmt.Sprintf(".matchExpressions[0].key: Invalid value: %q: %s", key, keyMessage)
}

// valueMessage is the API server's answer to a value that does not match
// LabelValue's pattern at path.
func valueMessage(path string) string {
	return path + " in body should match '^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$'"
}

// TestSelectorsAdmittedIffParsed checks the schema's key and value checks
// against the parser the operator and the sidecar use
// (metav1.LabelSelectorAsSelector): the API server admits a selector exactly
// when the parser accepts it, key by key and value by value, in matchLabels
// and in matchExpressions.
func TestSelectorsAdmittedIffParsed(t *testing.T) {
	keys := []string{
		"a", "A", "0", "a.b", "a-b", "a_b", "a..b", "A_9-z.Q",
		"", "-a", "a-", "_a", "a_", ".a", "a.", "a b", "é", "a\n", "a/", "/a", "a/b/c",
		strings.Repeat("a", 63), strings.Repeat("a", 64),
		"example.com/a", "kubernetes.io/metadata.name", "app.kubernetes.io/name", "1.2.3/x", "a/b",
		"Example.com/a", "example..com/a", "-example.com/a", "example.com-/a", "example-.com/a", "example_com/a",
		"example.com/-a", "example.com/" + strings.Repeat("a", 64),
		strings.Repeat("p", 253) + "/a", strings.Repeat("p", 254) + "/a",
		strings.Repeat("p", 253) + "/" + strings.Repeat("a", 63),
	}
	values := []string{
		"", "a", "A", "0", "A-b_c.9", "a..b", strings.Repeat("v", 63),
		"-a", "a-", "_a", ".a", "a.", "a b", "é", "a/b", "a\n", "a:b", strings.Repeat("v", 64),
	}
	var cases []kalpcv1alpha1.LabelSelector
	for _, k := range keys {
		cases = append(cases,
			kalpcv1alpha1.LabelSelector{MatchLabels: map[string]string{k: "v"}},
			expression(k, "Exists"))
	}
	for _, v := range values {
		cases = append(cases,
			kalpcv1alpha1.LabelSelector{MatchLabels: map[string]string{"k": v}},
			expression("k", "In", "ok", v))
	}
	var admitted, refused int
	for i, sel := range cases {
		_, parseErr := sel.AsSelector()
		for _, field := range selectorFields {
			p := port(fmt.Sprintf("iff-%d", i), func(p *kalpcv1alpha1.ConnectionPort) { field.set(p, sel) })
			err := dryRunCreate(t, p)
			switch {
			case parseErr == nil && err != nil:
				t.Errorf("%s = %+v: refused (%v), but the operator parses it", field.path, sel, err)
			case parseErr != nil && err == nil:
				t.Errorf("%s = %+v: admitted, but the operator cannot parse it (%v)", field.path, sel, parseErr)
			case err == nil:
				admitted++
			default:
				refused++
			}
		}
	}
	t.Logf("%d selectors admitted, %d refused, each as the operator's parser decides", admitted, refused)
	if admitted == 0 || refused == 0 {
		t.Errorf("admitted %d and refused %d: the cases must include both", admitted, refused)
	}
}

// TestLargestPortWithinCostBudget checks that the CEL rules' cost at run
// time stays within the API server's budget for a port whose 64 client
// rules each carry two selectors at their bounds, with long keys: the rules
// must never refuse a valid port for being too costly to check.
func TestLargestPortWithinCostBudget(t *testing.T) {
	sel := fullSelector(kalpcv1alpha1.MaxSelectorMatchLabels, kalpcv1alpha1.MaxSelectorMatchExpressions, 4)
	// Long keys, within etcd's 1.5 MiB object limit: 64 × 2 × 64 keys of
	// about 80 bytes.
	long := func(k string) string { return "example.com/" + k + strings.Repeat("k", 60) }
	matchLabels := map[string]string{}
	for k, v := range sel.MatchLabels {
		matchLabels[long(k)] = v
	}
	sel.MatchLabels = matchLabels
	for i := range sel.MatchExpressions {
		sel.MatchExpressions[i].Key = long(sel.MatchExpressions[i].Key)
	}
	p := port("largest", func(p *kalpcv1alpha1.ConnectionPort) {
		p.Spec.Servers = sel
		for range 64 {
			p.Spec.Clients = append(p.Spec.Clients, kalpcv1alpha1.ClientRule{NamespaceSelector: sel.DeepCopy(), PodSelector: sel.DeepCopy()})
		}
	})
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("port of %d bytes", len(data))
	if err := dryRunCreate(t, p); err != nil {
		t.Fatalf("Create() = %v, want accepted", err)
	}
}

// TestLabelSelectorJSON checks that LabelSelector reads and writes the JSON
// of metav1.LabelSelector unchanged, so that manifests written before it
// keep working, and that Metav1 returns the same selector.
func TestLabelSelectorJSON(t *testing.T) {
	for _, want := range []metav1.LabelSelector{
		{},
		{MatchLabels: map[string]string{"app": "echo", "example.com/tier": ""}},
		{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "a", Operator: metav1.LabelSelectorOpIn, Values: []string{"x", "y"}},
			{Key: "b", Operator: metav1.LabelSelectorOpDoesNotExist},
		}},
		{MatchLabels: map[string]string{"app": "echo"}, MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "c", Operator: metav1.LabelSelectorOpExists}}},
	} {
		data, err := json.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		var got kalpcv1alpha1.LabelSelector
		if err := yaml.UnmarshalStrict(data, &got); err != nil {
			t.Fatalf("UnmarshalStrict(%s) = %v", data, err)
		}
		if diff := cmp.Diff(&want, got.Metav1()); diff != "" {
			t.Errorf("Metav1() of %s mismatch (-want +got):\n%s", data, diff)
		}
		back, err := json.Marshal(got)
		if err != nil {
			t.Fatal(err)
		}
		if string(back) != string(data) {
			t.Errorf("json.Marshal() = %s, want %s (as metav1.LabelSelector)", back, data)
		}
	}
	var nilSelector *kalpcv1alpha1.LabelSelector
	if got := nilSelector.Metav1(); got != nil {
		t.Errorf("nil.Metav1() = %v, want nil", got)
	}
	// As metav1.LabelSelectorAsSelector: nil selects nothing, {} everything.
	if sel, err := nilSelector.AsSelector(); err != nil || sel.Matches(labels.Set{}) {
		t.Errorf("nil.AsSelector() = %v, %v; want a selector of nothing", sel, err)
	}
	if sel, err := (&kalpcv1alpha1.LabelSelector{}).AsSelector(); err != nil || !sel.Matches(labels.Set{"a": "b"}) {
		t.Errorf("{}.AsSelector() = %v, %v; want a selector of everything", sel, err)
	}
}

// TestLabelSelectorDeepCopy checks the hand-written DeepCopy: the copy
// shares no map or slice with the original.
func TestLabelSelectorDeepCopy(t *testing.T) {
	orig := fullSelector(2, 2, 2)
	cp := orig.DeepCopy()
	if diff := cmp.Diff(&orig, cp); diff != "" {
		t.Fatalf("DeepCopy() mismatch (-want +got):\n%s", diff)
	}
	cp.MatchLabels["k0"] = "changed"
	cp.MatchExpressions[0].Key = "changed"
	cp.MatchExpressions[1].Values[0] = "changed"
	for _, s := range []string{orig.MatchLabels["k0"], orig.MatchExpressions[0].Key, orig.MatchExpressions[1].Values[0]} {
		if s == "changed" {
			t.Fatalf("changing the copy changed the original: %+v", orig)
		}
	}
	if (*kalpcv1alpha1.LabelSelector)(nil).DeepCopy() != nil {
		t.Error("nil.DeepCopy() != nil")
	}
}

// expression is a selector of one requirement.
func expression(key, op string, values ...string) kalpcv1alpha1.LabelSelector {
	return kalpcv1alpha1.LabelSelector{MatchExpressions: []kalpcv1alpha1.LabelSelectorRequirement{
		{Key: key, Operator: metav1.LabelSelectorOperator(op), Values: values},
	}}
}

// fullSelector is a valid selector of labels matchLabels and expressions
// In requirements of values values each.
func fullSelector(matchLabels, expressions, values int) kalpcv1alpha1.LabelSelector {
	var s kalpcv1alpha1.LabelSelector
	for i := range matchLabels {
		if s.MatchLabels == nil {
			s.MatchLabels = map[string]string{}
		}
		s.MatchLabels[fmt.Sprintf("k%d", i)] = fmt.Sprintf("v%d", i)
	}
	for i := range expressions {
		r := kalpcv1alpha1.LabelSelectorRequirement{Key: fmt.Sprintf("e%d", i), Operator: metav1.LabelSelectorOpIn}
		for j := range values {
			r.Values = append(r.Values, fmt.Sprintf("v%d", j))
		}
		s.MatchExpressions = append(s.MatchExpressions, r)
	}
	return s
}
