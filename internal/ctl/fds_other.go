//go:build !unix

package ctl

import (
	"errors"
	"net"
	"os"
)

// errNoRights: descriptors travel only over Unix sockets (SCM_RIGHTS).
var errNoRights = errors.Join(errors.New("ctl: passing descriptors needs a Unix system"), errors.ErrUnsupported)

// No control message is ever received here, so no flag is ever set.
const (
	msgCtrunc = 0
	msgTrunc  = 0
)

func rights(*os.File) ([]byte, error) { return nil, errNoRights }

func rightsSpace(int) int { return 0 }

func closeFDs([]int) {}

func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	return nil, errNoRights
}

// waitReadable has nothing to wait for: the read reports what it finds.
func waitReadable(*net.UnixConn) error { return nil }
