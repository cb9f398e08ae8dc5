//go:build !linux

package socklock

import (
	"errors"
	"fmt"
	"os"
)

const oNoFollow = 0

// flock fails off Linux, where kalpc publishes no sockets.
func flock(*os.File) error {
	return fmt.Errorf("socklock: %w on this platform", errors.ErrUnsupported)
}
