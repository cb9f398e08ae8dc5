package bench

import (
	"context"
	"errors"
	"fmt"
)

// Placement says where a transport's two processes run.
type Placement string

const (
	// CrossNamespace puts the server in the server namespace and the client
	// in the client namespace: two pods on one node.
	CrossNamespace Placement = "cross-namespace"
	// SameNamespace puts both processes in the server namespace: two
	// containers of one pod (loopback TCP).
	SameNamespace Placement = "same-namespace"
	// ClientOnly runs a client process and no server: an in-process floor.
	ClientOnly Placement = "client-only"
)

// Info describes a transport. Name is part of the JSON schema and never
// changes for a given transport.
type Info struct {
	// Name is the transport's stable identifier, e.g. "kalpc-inline".
	Name string `json:"name"`
	// Label is the human-readable name used in tables and plots.
	Label string `json:"label"`
	// Path describes the data path a payload takes.
	Path string `json:"path"`
	// Placement says where the client and server processes run.
	Placement Placement `json:"placement"`
}

// Env is what a transport needs to know about the run.
type Env struct {
	// Netns reports whether client and server run in two network namespaces
	// joined by a veth pair.
	Netns bool
	// ServerVethIP is the server's address on the veth pair (netns mode only).
	ServerVethIP string
}

// Cell is one measurement: a transport at a payload size.
type Cell struct {
	// Transport is the transport's Name.
	Transport string `json:"transport"`
	// Size is the request payload in bytes.
	Size int `json:"size"`
	// ReplySize is the reply payload in bytes.
	ReplySize int `json:"reply_size"`
	// SocketPath is where a Unix-socket server listens (in the shared
	// directory).
	SocketPath string `json:"socket_path"`
	// ListenHost is the IP address a TCP server binds.
	ListenHost string `json:"listen_host"`
}

// Transport is one way of moving a request of Cell.Size bytes from a client
// process to a server process and a reply of Cell.ReplySize bytes back.
// Serve runs in the server process, Dial in the client process.
type Transport interface {
	// Info describes the transport.
	Info() Info
	// Available returns nil if the transport can run a cell of size bytes in
	// env, or an *UnavailableError saying why not.
	Available(env Env, size int) error
	// Serve starts serving cell in the background until ctx ends and
	// returns the address a client dials.
	Serve(ctx context.Context, cell Cell) (addr string, err error)
	// Dial connects to addr and returns a client for cell.
	Dial(ctx context.Context, cell Cell, addr string) (Client, error)
}

// Client performs round trips.
type Client interface {
	// RoundTrip sends one request of the cell's size and waits for its
	// reply, checking the reply's length.
	RoundTrip(ctx context.Context) error
	// Close releases the client's resources.
	Close() error
}

// UnavailableError says why a transport cannot run a cell. Such cells are
// reported with status "unavailable", not as failures.
type UnavailableError struct {
	Reason string
}

func (e *UnavailableError) Error() string { return "not available: " + e.Reason }

func unavailable(format string, args ...any) error {
	return &UnavailableError{Reason: fmt.Sprintf(format, args...)}
}

// isUnavailable reports whether err is (or wraps) an *UnavailableError.
func isUnavailable(err error) (string, bool) {
	var ue *UnavailableError
	if errors.As(err, &ue) {
		return ue.Reason, true
	}
	return "", false
}

// registry holds every transport, in the order of the report's rows.
var registry []Transport

// Register adds t to the transports every run measures. It panics if a
// transport of the same name exists. Call it from an init function.
func Register(t Transport) {
	if _, ok := lookup(t.Info().Name); ok {
		panic(fmt.Sprintf("bench: transport %q registered twice", t.Info().Name))
	}
	registry = append(registry, t)
}

// Transports returns the registered transports in report order.
func Transports() []Transport { return append([]Transport(nil), registry...) }

func lookup(name string) (Transport, bool) {
	for _, t := range registry {
		if t.Info().Name == name {
			return t, true
		}
	}
	return nil, false
}

// The built-in transports, registered in report order: floors first, then
// kalpc, then what users run today, then gRPC over kalpc. A new transport
// implements Transport and is registered here (or with Register from its
// own init), which adds its rows to every report.
func init() {
	Register(copyTransport{})
	Register(rawSeqpacketTransport{})
	Register(kalpcTransport{mode: kalpcCall})
	Register(kalpcTransport{mode: kalpcInline})
	Register(kalpcTransport{mode: kalpcSection})
	Register(kalpcTransport{mode: kalpcLoan})
	Register(grpcTransport{name: "grpc-tcp-veth"})
	Register(grpcTransport{name: "grpc-tcp-loopback"})
	Register(grpcTransport{name: "grpc-unix"})
	Register(grpcKalpcTransport{native: false})
	Register(grpcKalpcTransport{native: true})
}
