package v1alpha1

import (
	"maps"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Bounds of a LabelSelector. They let the CRD schema check every selector
// of a port with CEL rules within the API server's cost budget (the
// unbounded lists of metav1.LabelSelector put the same rules 15-19 times
// over it), and they are far above what a selector of pods or namespaces
// needs.
const (
	// MaxSelectorMatchLabels is the most entries of a selector's matchLabels.
	MaxSelectorMatchLabels = 32
	// MaxSelectorMatchExpressions is the most requirements of a selector's
	// matchExpressions.
	MaxSelectorMatchExpressions = 32
	// MaxSelectorValues is the most values of one requirement.
	MaxSelectorValues = 64
)

// The rules below check a selector the way metav1.LabelSelectorAsSelector
// parses it, so that a selector the operator or the sidecar could not parse
// is refused at admission instead of showing up later as a status reason or
// a refused connection:
//
//   - a label key is a qualified name: a name of at most 63 characters
//     (alphanumerics, '-', '_' and '.', starting and ending with an
//     alphanumeric), optionally after a DNS subdomain prefix of at most 253
//     characters and '/' (validation.IsQualifiedName);
//   - a label value is empty or at most 63 such characters
//     (validation.IsValidLabelValue);
//   - the operator is In, NotIn, Exists or DoesNotExist; In and NotIn need
//     values, Exists and DoesNotExist take none.
//
// The regular expressions are those of k8s.io/apimachinery's validation
// package; TestSelectorsAdmittedIffParsed checks the schema against
// metav1.LabelSelectorAsSelector. The operator is checked by a rule, not an
// enum: an enum violation, like a required field, a maxItems or a maxLength,
// makes the API server skip every CEL rule and add "some validation rules
// were not checked" to its answer. The key's maxLength (253 + 1 + 63) only
// bounds the cost of its rule.

// LabelSelector selects objects by their labels. Its fields and their JSON
// form are those of metav1.LabelSelector, so a selector written for a
// Kubernetes object fits here unchanged; it adds bounds on its lists and
// admission checks of its keys, values and operators. An empty selector
// ({}) selects every object.
// +structType=atomic
// +kubebuilder:object:generate=false
type LabelSelector struct {
	// matchLabels is a map of {key,value} pairs. A single {key,value} in the
	// matchLabels map is equivalent to an element of matchExpressions whose
	// key field is "key", operator is "In" and values array contains only
	// "value". The requirements are ANDed. At most 32 entries.
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	// +kubebuilder:validation:XValidation:rule="self.all(k, k.size() <= 317 && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$') && (!k.contains('/') || k.indexOf('/') <= 253))",message="every key must be a label key: a name of at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, optionally after a DNS subdomain prefix of at most 253 characters and '/'",messageExpression="'key \"' + self.filter(k, !(k.size() <= 317 && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$') && (!k.contains('/') || k.indexOf('/') <= 253)))[0] + \"\\\" must be a label key: a name of at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, optionally after a DNS subdomain prefix of at most 253 characters and '/'\""
	MatchLabels map[string]LabelValue `json:"matchLabels,omitempty"`

	// matchExpressions is a list of label selector requirements. The
	// requirements are ANDed. At most 32 requirements.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	MatchExpressions []LabelSelectorRequirement `json:"matchExpressions,omitempty"`
}

// LabelSelectorRequirement is a selector that contains values, a key, and an
// operator that relates the key and values.
// +kubebuilder:validation:XValidation:rule="self.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist']",message="operator must be In, NotIn, Exists or DoesNotExist",fieldPath=".operator"
// +kubebuilder:validation:XValidation:rule="!(self.operator in ['In', 'NotIn']) || (has(self.values) && size(self.values) > 0)",message="values must not be empty when the operator is In or NotIn",fieldPath=".values",reason=FieldValueRequired
// +kubebuilder:validation:XValidation:rule="!(self.operator in ['Exists', 'DoesNotExist']) || !has(self.values) || size(self.values) == 0",message="values must be empty when the operator is Exists or DoesNotExist",fieldPath=".values",reason=FieldValueForbidden
type LabelSelectorRequirement struct {
	// key is the label key that the selector applies to: a name of at most
	// 63 characters, optionally after a DNS subdomain prefix and '/'.
	// +required
	// +kubebuilder:validation:MaxLength=317
	// +kubebuilder:validation:XValidation:rule="self.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$') && (!self.contains('/') || self.indexOf('/') <= 253)",message="key must be a label key: a name of at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, optionally after a DNS subdomain prefix of at most 253 characters and '/'"
	Key string `json:"key"`

	// operator represents a key's relationship to a set of values: In,
	// NotIn, Exists or DoesNotExist.
	// +required
	Operator metav1.LabelSelectorOperator `json:"operator"`

	// values is an array of label values. If the operator is In or NotIn,
	// the values array must be non-empty. If the operator is Exists or
	// DoesNotExist, the values array must be empty. At most 64 values.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	Values []LabelValue `json:"values,omitempty"`
}

// LabelValue is an alias of string, so a map[string]string or a []string
// fits where it is used; it exists to give every value of a selector (in
// matchLabels, which no marker reaches, and in values) the schema below. A
// pattern rather than a CEL rule checks it: a CEL rule over every value of
// every selector of a port estimates 4 times over the API server's budget.

// LabelValue is a label value: empty, or at most 63 letters, digits, '-',
// '_' or '.', starting and ending with a letter or digit.
// +kubebuilder:validation:Pattern=`^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$`
type LabelValue = string

// Metav1 returns s as a metav1.LabelSelector, for apimachinery's selector
// helpers. A nil s returns nil. The result shares s's matchLabels map and
// values slices: treat it as read-only, or DeepCopy it.
func (s *LabelSelector) Metav1() *metav1.LabelSelector {
	if s == nil {
		return nil
	}
	out := &metav1.LabelSelector{MatchLabels: s.MatchLabels}
	if s.MatchExpressions != nil {
		out.MatchExpressions = make([]metav1.LabelSelectorRequirement, len(s.MatchExpressions))
		for i, e := range s.MatchExpressions {
			out.MatchExpressions[i] = metav1.LabelSelectorRequirement{Key: e.Key, Operator: e.Operator, Values: e.Values}
		}
	}
	return out
}

// AsSelector parses s as metav1.LabelSelectorAsSelector does: a nil s
// selects nothing, an empty one everything. The CRD's rules refuse every
// selector it cannot parse, so an error means the object was stored before
// those rules or bypassed admission.
func (s *LabelSelector) AsSelector() (labels.Selector, error) {
	return metav1.LabelSelectorAsSelector(s.Metav1())
}

// DeepCopyInto copies s into out. It is written by hand: controller-gen's
// deepcopy generator (v0.23) refuses a map whose values are an alias
// ("invalid map value type: string").
func (s *LabelSelector) DeepCopyInto(out *LabelSelector) {
	*out = LabelSelector{MatchLabels: maps.Clone(s.MatchLabels)}
	if s.MatchExpressions != nil {
		out.MatchExpressions = make([]LabelSelectorRequirement, len(s.MatchExpressions))
		for i := range s.MatchExpressions {
			s.MatchExpressions[i].DeepCopyInto(&out.MatchExpressions[i])
		}
	}
}

// DeepCopy returns a deep copy of s; a nil s returns nil.
func (s *LabelSelector) DeepCopy() *LabelSelector {
	if s == nil {
		return nil
	}
	out := new(LabelSelector)
	s.DeepCopyInto(out)
	return out
}
