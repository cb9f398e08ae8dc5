package alpc

import (
	"context"
	"errors"
	"fmt"

	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
	"github.com/kalpc/kalpc/pkg/alpc/internal/wire"
)

// handshakeBufSize fits the largest handshake datagram.
const handshakeBufSize = wire.HeaderSize + wire.ParamsSize + wire.MaxHandshakeMessage

// writeHandshake sends one handshake message on a raw socket, waiting for
// buffer space until ctx ends.
func writeHandshake(ctx context.Context, fd int, typ wire.Type, params *wire.Params, msg []byte) error {
	var payload []byte
	if params != nil {
		payload = make([]byte, wire.ParamsSize, wire.ParamsSize+len(msg))
		params.Put(payload)
	}
	payload = append(payload, msg...)
	h := wire.Header{Type: typ}
	return sendMessage(fd, &h, payload, nil, func() error { return sys.WaitFD(ctx, fd, sys.PollOut) })
}

// readHandshake receives one handshake message on a raw socket until ctx
// ends. Descriptors are never expected during a handshake: any received are
// closed and the message refused.
func readHandshake(ctx context.Context, fd int) (wire.Header, []byte, error) {
	buf := make([]byte, handshakeBufSize)
	oob := make([]byte, sys.OOBSpace(wire.MaxFDs))
	for {
		n, oobn, rflags, err := sys.Recvmsg(fd, buf, oob, sys.MsgDontWait|sys.MsgCmsgCloexec)
		switch {
		case errors.Is(err, sys.EAGAIN):
			if err := sys.WaitFD(ctx, fd, sys.PollIn); err != nil {
				return wire.Header{}, nil, err
			}
			continue
		case errors.Is(err, sys.EINTR):
			continue
		case errors.Is(err, sys.ECONNRESET):
			return wire.Header{}, nil, ErrPeerClosed
		case err != nil:
			return wire.Header{}, nil, err
		}
		fds, ferr := sys.ParseRights(oob[:oobn])
		sys.CloseAll(fds)
		switch {
		case ferr != nil:
			return wire.Header{}, nil, protocolErrorf("bad control message in handshake: %v", ferr)
		case len(fds) > 0 || rflags&sys.MsgCtrunc != 0:
			return wire.Header{}, nil, protocolErrorf("file descriptors attached to a handshake message")
		case n == 0:
			return wire.Header{}, nil, ErrPeerClosed
		case rflags&sys.MsgTrunc != 0:
			return wire.Header{}, nil, protocolErrorf("handshake message larger than %d bytes", handshakeBufSize)
		}
		h, payload, err := wire.Parse(buf[:n])
		if err != nil {
			return h, nil, asProtocolError(err)
		}
		return h, payload, nil
	}
}

// parseHandshake splits a connect/accept payload into the peer's
// parameters and a copy of its message.
func parseHandshake(payload []byte) (wire.Params, []byte, error) {
	p, err := wire.ParseParams(payload)
	if err != nil {
		return p, nil, asProtocolError(err)
	}
	return p, append([]byte(nil), payload[wire.ParamsSize:]...), nil
}

func checkHandshakeMessage(what string, msg []byte) error {
	if len(msg) > MaxConnectionMessage {
		return fmt.Errorf("%w: %s of %d bytes exceeds %d bytes", ErrTooLarge, what, len(msg), MaxConnectionMessage)
	}
	return nil
}
