//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestUserRoles checks the chart's ConnectionPort roles as the cluster's
// role aggregation controller merges them: a ServiceAccount bound to the
// built-in edit role may declare ports in its namespace, one bound to view
// may only read them, and neither may write a port's status.
func TestUserRoles(t *testing.T) {
	const space = "kalpc-e2e-rbac"
	_, _ = kcErr("delete", "namespace", space, "--wait")
	kc(t, "create", "namespace", space)
	t.Cleanup(func() { _, _ = kcErr("delete", "namespace", space, "--wait=false") })
	for _, role := range []string{"edit", "view"} {
		kc(t, "-n", space, "create", "serviceaccount", role+"-user")
		kc(t, "-n", space, "create", "rolebinding", role+"-user", "--clusterrole="+role, "--serviceaccount="+space+":"+role+"-user")
	}
	// resource is "resource" or "resource/subresource" (kubectl's own
	// "type/name" syntax would name an object instead).
	canI := func(user, verb, resource string) string {
		args := []string{"auth", "can-i", verb, "-n", space, "--as=system:serviceaccount:" + space + ":" + user}
		if res, sub, ok := strings.Cut(resource, "/"); ok {
			args = append(args, res, "--subresource="+sub)
		} else {
			args = append(args, resource)
		}
		out, _ := kcErr(args...)
		return strings.TrimSpace(out)
	}
	for _, c := range []struct {
		user, verb, resource, want string
	}{
		{"edit-user", "create", "connectionports.kalpc.io", "yes"},
		{"edit-user", "delete", "connectionports.kalpc.io", "yes"},
		{"edit-user", "update", "connectionports.kalpc.io/status", "no"},
		{"view-user", "list", "connectionports.kalpc.io", "yes"},
		{"view-user", "get", "connectionports.kalpc.io/status", "yes"},
		{"view-user", "create", "connectionports.kalpc.io", "no"},
	} {
		// The aggregation controller merges the rules shortly after the
		// chart's ClusterRoles appear.
		waitFor(t, fmt.Sprintf("%s: can-i %s %s = %s", c.user, c.verb, c.resource, c.want), time.Minute, func() (bool, string) {
			got := canI(c.user, c.verb, c.resource)
			return got == c.want, got
		})
	}

	// And for real: the edit user declares a port, the view user cannot.
	port := `apiVersion: kalpc.io/v1alpha1
kind: ConnectionPort
metadata: {name: declared}
spec:
  servers: {matchLabels: {app: declared}}
`
	if out, err := kcStdinErr(port, "-n", space, "--as=system:serviceaccount:"+space+":view-user", "create", "-f", "-"); err == nil || !strings.Contains(out, "forbidden") {
		t.Errorf("view user created a ConnectionPort: %v\n%s", err, out)
	}
	if out, err := kcStdinErr(port, "-n", space, "--as=system:serviceaccount:"+space+":edit-user", "create", "-f", "-"); err != nil {
		t.Errorf("edit user could not create a ConnectionPort: %v\n%s", err, out)
	}
	if out := kc(t, "-n", space, "--as=system:serviceaccount:"+space+":view-user", "get", "connectionports", "-o", "name"); strings.TrimSpace(out) != "connectionport.kalpc.io/declared" {
		t.Errorf("view user lists %q", out)
	}
}
