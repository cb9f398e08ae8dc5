package nodeprep

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// Spec says what a prepared directory looks like.
type Spec struct {
	// Path is the directory to prepare; it must exist. Required.
	Path string

	// UID owns the directory. Required; must not be 0.
	UID int

	// GID is the directory's group. Defaults to UID when negative.
	GID int

	// Mode holds the directory's permission bits (no setuid, setgid or
	// sticky bits). Required; must give the owner rwx.
	Mode fs.FileMode
}

// Result says what Prepare changed.
type Result struct {
	// Chowned is true when the owner or group changed.
	Chowned bool
	// Chmodded is true when the permission bits changed.
	Chmodded bool
}

// Validate checks a Spec without touching the file system.
func (s Spec) Validate() error {
	var errs []error
	if s.Path == "" {
		errs = append(errs, errors.New("path must not be empty"))
	}
	if s.UID <= 0 {
		errs = append(errs, fmt.Errorf("uid must be a non-root UID, not %d", s.UID))
	}
	if s.Mode&^fs.ModePerm != 0 {
		errs = append(errs, fmt.Errorf("mode %#o has bits other than the permission bits", uint32(s.Mode)))
	}
	if s.Mode&0o700 != 0o700 {
		errs = append(errs, fmt.Errorf("mode %#o must give the owner read, write and search (0700)", uint32(s.Mode)))
	}
	if s.Mode&0o002 != 0 {
		errs = append(errs, fmt.Errorf("mode %#o must not be writable by others", uint32(s.Mode)))
	}
	return errors.Join(errs...)
}

// Prepare makes s.Path a directory owned by s.UID:s.GID with mode s.Mode. It
// changes nothing that is already right, so it is cheap to call again and
// again. It needs CAP_CHOWN, unless the process already owns the directory.
func Prepare(s Spec) (Result, error) {
	if s.GID < 0 {
		s.GID = s.UID
	}
	if err := s.Validate(); err != nil {
		return Result{}, err
	}
	st, err := lstat(s.Path)
	if err != nil {
		return Result{}, err
	}
	var res Result
	if fs.FileMode(st.Mode)&fs.ModePerm != s.Mode || st.Mode&(syscall.S_ISUID|syscall.S_ISGID|syscall.S_ISVTX) != 0 {
		// Only the owner (or CAP_FOWNER, which we do not have) may change the
		// permission bits: become the owner first.
		if euid := os.Geteuid(); int(st.Uid) != euid {
			if err := os.Lchown(s.Path, euid, -1); err != nil {
				return res, fmt.Errorf("failed to take ownership of %s to change its mode: %w", s.Path, err)
			}
			res.Chowned = true
			st.Uid = uint32(euid)
		}
		if err := os.Chmod(s.Path, s.Mode); err != nil {
			return res, fmt.Errorf("failed to change the mode of %s: %w", s.Path, err)
		}
		res.Chmodded = true
	}
	if int(st.Uid) != s.UID || int(st.Gid) != s.GID {
		if err := os.Lchown(s.Path, s.UID, s.GID); err != nil {
			return res, fmt.Errorf("failed to change the owner of %s to %d:%d: %w", s.Path, s.UID, s.GID, err)
		}
		res.Chowned = true
	}
	return res, nil
}

// lstat returns the status of path, which must be a directory and not a
// symbolic link.
func lstat(path string) (*syscall.Stat_t, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, fmt.Errorf("failed to stat the node directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory (%s)", path, fi.Mode().Type())
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, fmt.Errorf("failed to read the owner of %s", path)
	}
	return st, nil
}
