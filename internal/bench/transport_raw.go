package bench

import (
	"context"
	"sync"
)

// rawRecordSize bounds one SOCK_SEQPACKET record of the raw baseline. A
// payload larger than this is sent as several records (one record can never
// hold 16 MiB on Linux: see docs/performance.md).
const rawRecordSize = 64 << 10

// rawSeqpacketTransport is the floor for the socket technique: blocking
// send/recv on an AF_UNIX SOCK_SEQPACKET socket with no protocol, no
// header and no goroutine hand-off.
type rawSeqpacketTransport struct{}

func (rawSeqpacketTransport) Info() Info {
	return Info{
		Name:      "raw-seqpacket",
		Label:     "raw SOCK_SEQPACKET (socket floor)",
		Path:      "blocking sendmsg/recvmsg on AF_UNIX SOCK_SEQPACKET, records of at most 64 KiB, no protocol",
		Placement: CrossNamespace,
	}
}

func (rawSeqpacketTransport) Available(Env, int) error { return nil }

func (rawSeqpacketTransport) Serve(ctx context.Context, cell Cell) (string, error) {
	lfd, err := seqpacketListen(cell.SocketPath)
	if err != nil {
		return "", err
	}
	var once sync.Once
	closeL := func() { once.Do(func() { _ = closeFD(lfd) }) }
	go func() {
		<-ctx.Done()
		closeL()
	}()
	go func() {
		defer closeL()
		fd, err := seqpacketAccept(lfd)
		if err != nil {
			return
		}
		defer func() { _ = closeFD(fd) }()
		buf := make([]byte, cell.Size)
		touch(buf)
		reply := newPayload(cell.ReplySize)
		for {
			if err := rawRecv(fd, buf); err != nil {
				return
			}
			if cell.ReplySize == cell.Size {
				reply = buf
			}
			if err := rawSend(fd, reply); err != nil {
				return
			}
		}
	}()
	return cell.SocketPath, nil
}

func (rawSeqpacketTransport) Dial(_ context.Context, cell Cell, addr string) (Client, error) {
	fd, err := seqpacketDial(addr)
	if err != nil {
		return nil, err
	}
	reply := make([]byte, cell.ReplySize)
	touch(reply)
	return &rawClient{fd: fd, payload: newPayload(cell.Size), reply: reply}, nil
}

type rawClient struct {
	fd      int
	payload []byte
	reply   []byte
}

func (c *rawClient) RoundTrip(context.Context) error {
	if err := rawSend(c.fd, c.payload); err != nil {
		return err
	}
	return rawRecv(c.fd, c.reply)
}

func (c *rawClient) Close() error { return closeFD(c.fd) }

// rawSend writes b as records of at most rawRecordSize bytes.
func rawSend(fd int, b []byte) error {
	for len(b) > 0 {
		n := min(len(b), rawRecordSize)
		if err := recordWrite(fd, b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// rawRecv reads records into b until it is full.
func rawRecv(fd int, b []byte) error {
	for off := 0; off < len(b); {
		n, err := recordRead(fd, b[off:min(len(b), off+rawRecordSize)])
		if err != nil {
			return err
		}
		off += n
	}
	return nil
}
