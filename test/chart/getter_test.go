package chart_test

import (
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// restConfigGetter gives Helm's action.Configuration a fixed rest.Config
// (envtest's) instead of a kubeconfig file.
type restConfigGetter struct {
	config    *rest.Config
	namespace string
}

var _ genericclioptions.RESTClientGetter = &restConfigGetter{}

// ToRESTConfig returns a copy of the config.
func (g *restConfigGetter) ToRESTConfig() (*rest.Config, error) {
	return rest.CopyConfig(g.config), nil
}

// ToDiscoveryClient returns a discovery client cached in memory.
func (g *restConfigGetter) ToDiscoveryClient() (discovery.CachedDiscoveryInterface, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(g.config)
	if err != nil {
		return nil, err
	}
	return memory.NewMemCacheClient(dc), nil
}

// ToRESTMapper returns a mapper that discovers lazily, so that kinds of
// CRDs created by a release are found when they are first used.
func (g *restConfigGetter) ToRESTMapper() (meta.RESTMapper, error) {
	dc, err := g.ToDiscoveryClient()
	if err != nil {
		return nil, err
	}
	return restmapper.NewShortcutExpander(restmapper.NewDeferredDiscoveryRESTMapper(dc), dc, nil), nil
}

// ToRawKubeConfigLoader returns a kubeconfig equivalent to the config, with
// the namespace as its default namespace.
func (g *restConfigGetter) ToRawKubeConfigLoader() clientcmd.ClientConfig {
	return clientcmd.NewDefaultClientConfig(*kubeconfig(g.config, g.namespace, nil), &clientcmd.ConfigOverrides{})
}

// impersonation names the user a kubeconfig acts as.
type impersonation struct {
	user   string
	groups []string
}

// kubeconfig turns a client-certificate rest.Config (envtest's) into a
// kubeconfig, optionally impersonating another user.
func kubeconfig(c *rest.Config, namespace string, as *impersonation) *clientcmdapi.Config {
	auth := &clientcmdapi.AuthInfo{
		ClientCertificateData: c.CertData,
		ClientKeyData:         c.KeyData,
		Token:                 c.BearerToken,
	}
	if as != nil {
		auth.Impersonate = as.user
		auth.ImpersonateGroups = as.groups
	}
	return &clientcmdapi.Config{
		Clusters:       map[string]*clientcmdapi.Cluster{"envtest": {Server: c.Host, CertificateAuthorityData: c.CAData}},
		AuthInfos:      map[string]*clientcmdapi.AuthInfo{"envtest": auth},
		Contexts:       map[string]*clientcmdapi.Context{"envtest": {Cluster: "envtest", AuthInfo: "envtest", Namespace: namespace}},
		CurrentContext: "envtest",
	}
}
