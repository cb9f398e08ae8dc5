// Package chart holds the tests of the kalpc Helm chart (charts/kalpc); it
// has no code of its own.
//
// # Rendering tests
//
// render_test.go renders the chart with the Helm Go SDK, as `helm template`
// does, for the default values and each important option, and checks the
// objects that matter: names and flags that must agree, the webhook
// selectors, the security contexts, and that the chart's CRD, RBAC rules and
// webhooks stay in step with what controller-gen generates into config/.
// schema_test.go checks that values.schema.json rejects typos and bad
// values.
//
// # Installation tests
//
// install_test.go runs a real `helm install`, `helm upgrade` and
// `helm uninstall` (action.Install, action.Upgrade, action.Uninstall) against
// a real API server (envtest), runs the real operator binary with the
// chart's ServiceAccount and flags, and checks what the API server holds at
// each step. Run them with KUBEBUILDER_ASSETS=$(hack/envtest-bins.sh).
package chart
