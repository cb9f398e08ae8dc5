//go:build linux && !kalpc_stub

package alpc

import (
	"errors"
	"fmt"
	"os"

	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
)

// helperRawEcho is the baseline peer for benchmarks: a raw SOCK_SEQPACKET
// echo loop with blocking system calls and no protocol at all.
func helperRawEcho(path string) error {
	lfd, err := rawListener(path, 16)
	if err != nil {
		return err
	}
	fmt.Println("READY")
	for {
		fd, err := sys.Accept4(lfd)
		if err != nil {
			return err
		}
		go func() {
			defer sys.Close(fd)
			buf := make([]byte, 1<<20)
			for {
				n, _, _, err := sys.Recvmsg(fd, buf, nil, 0)
				if err != nil || n == 0 {
					return
				}
				if err := sys.Sendmsg(fd, buf[:n], nil, nil, sys.MsgNoSignal); err != nil {
					return
				}
			}
		}()
		_ = os.Stdout.Sync()
		if errors.Is(err, sys.EBADF) {
			return nil
		}
	}
}
