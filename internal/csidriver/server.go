package csidriver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// Sockets says where Serve listens.
type Sockets struct {
	// CSI is the socket the kubelet calls the CSI services on, normally
	// <kubelet dir>/plugins/<driver name>/csi.sock. Required.
	CSI string

	// Registration is the plugin registration socket, normally
	// <kubelet dir>/plugins_registry/<driver name>-reg.sock; the kubelet
	// watches that directory and asks it for the CSI socket. Empty: do not
	// register (tests call the CSI socket directly).
	Registration string
}

// SocketsFor returns the conventional socket paths of driver below the
// kubelet directory.
func SocketsFor(kubeletDir, driver string) Sockets {
	return Sockets{
		CSI:          filepath.Join(kubeletDir, "plugins", driver, "csi.sock"),
		Registration: filepath.Join(kubeletDir, "plugins_registry", driver+"-reg.sock"),
	}
}

// shutdownGrace bounds how long Serve waits for calls in flight at the end.
const shutdownGrace = 5 * time.Second

// Serve serves d's CSI services on s.CSI and, when s.Registration is set,
// the kubelet's plugin registration service, until ctx ends. It removes
// stale sockets at those paths before and its own sockets after, so that a
// driver that is gone leaves no registration behind.
func Serve(ctx context.Context, d *Driver, s Sockets) error {
	if s.CSI == "" {
		return errors.New("CSI socket path is required")
	}
	csiLis, err := listenUnix(s.CSI)
	if err != nil {
		return err
	}
	defer func() { _ = removeSocket(s.CSI) }()
	csiSrv := grpc.NewServer(grpc.MaxRecvMsgSize(1 << 20))
	csi.RegisterIdentityServer(csiSrv, d)
	csi.RegisterNodeServer(csiSrv, d)

	servers := []*grpc.Server{csiSrv}
	errc := make(chan error, 2)
	go func() { errc <- csiSrv.Serve(csiLis) }()

	if s.Registration != "" {
		regLis, err := listenUnix(s.Registration)
		if err != nil {
			csiSrv.Stop()
			return errors.Join(err, <-errc)
		}
		defer func() { _ = removeSocket(s.Registration) }()
		regSrv := grpc.NewServer(grpc.MaxRecvMsgSize(64 << 10))
		registerapi.RegisterRegistrationServer(regSrv, &registration{name: d.cfg.Name, endpoint: s.CSI, log: d.cfg.Log})
		servers = append(servers, regSrv)
		go func() { errc <- regSrv.Serve(regLis) }()
	}
	d.cfg.Log.Info("Serving the CSI driver", "driver", d.cfg.Name, "csiSocket", s.CSI, "registrationSocket", s.Registration)

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	for _, srv := range servers {
		stopWithin(srv, shutdownGrace)
	}
	if serveErr != nil {
		return fmt.Errorf("CSI gRPC server failed: %w", serveErr)
	}
	return nil
}

// stopWithin stops srv gracefully, or forcibly after grace.
func stopWithin(srv *grpc.Server, grace time.Duration) {
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		srv.Stop()
		<-done
	}
}

// listenUnix listens on a Unix socket at path, mode 0600, creating its
// directory (0750) and replacing a stale socket left by a previous run.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("failed to create the socket directory: %w", err)
	}
	if err := removeSocket(path); err != nil {
		return nil, err
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("failed to listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		lis.Close()
		return nil, fmt.Errorf("failed to restrict %s: %w", path, err)
	}
	return lis, nil
}

// removeSocket removes the socket at path, if any; it refuses to remove
// anything that is not a socket.
func removeSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("failed to check %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket (%s)", path, fi.Mode().Type())
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("failed to remove the stale socket %s: %w", path, err)
	}
	return nil
}

// registration is the kubelet's plugin registration service: the kubelet
// finds its socket in plugins_registry, asks GetInfo for the driver's name
// and CSI socket, and reports the outcome.
type registration struct {
	registerapi.UnimplementedRegistrationServer
	name     string
	endpoint string
	log      *slog.Logger
}

// GetInfo implements registerapi.RegistrationServer.
func (r *registration) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              r.name,
		Endpoint:          r.endpoint,
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

// NotifyRegistrationStatus implements registerapi.RegistrationServer.
func (r *registration) NotifyRegistrationStatus(_ context.Context, st *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if st.GetPluginRegistered() {
		r.log.Info("Registered with the kubelet", "driver", r.name)
	} else {
		r.log.Error("The kubelet refused the registration", "driver", r.name, "error", st.GetError())
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}
