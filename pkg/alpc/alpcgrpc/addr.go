package alpcgrpc

import "net"

// Network is the network name reported by the addresses of this package's
// connections and listeners.
const Network = "kalpc"

// Addr is the address of a kalpc connection port: the path of its socket.
type Addr string

var _ net.Addr = Addr("")

// Network returns "kalpc".
func (Addr) Network() string { return Network }

// String returns the port's socket path.
func (a Addr) String() string { return string(a) }
