package csidriver

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// mountInfoPath is the mount table of the driver's own mount namespace.
const mountInfoPath = "/proc/self/mountinfo"

// maxMountInfoBytes bounds how much of the mount table is read: a node with
// thousands of pods has a few MB; more than this is not a mount table.
const maxMountInfoBytes = 64 << 20

// mount is one line of /proc/self/mountinfo (proc(5)).
type mount struct {
	// Dev is the st_dev of the file system, "major:minor".
	Dev string
	// Root is the directory of that file system mounted here; a bind mount
	// of a subdirectory has that subdirectory as its Root.
	Root string
	// Point is the mount point, relative to the process's root.
	Point string
	// Options are the per-mount options (rw, nosuid, ...).
	Options string
}

// readMounts parses the driver's mount table.
func readMounts() ([]mount, error) {
	f, err := os.Open(mountInfoPath)
	if err != nil {
		return nil, fmt.Errorf("failed to read the mount table: %w", err)
	}
	defer f.Close()
	return parseMounts(io.LimitReader(f, maxMountInfoBytes))
}

// parseMounts parses mountinfo lines: "id parent major:minor root point
// options [optional...] - fstype source superoptions".
func parseMounts(r io.Reader) ([]mount, error) {
	var mounts []mount
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 10 {
			return nil, fmt.Errorf("malformed mountinfo line %q", s.Text())
		}
		mounts = append(mounts, mount{
			Dev:     fields[2],
			Root:    unescapeMountPath(fields[3]),
			Point:   unescapeMountPath(fields[4]),
			Options: fields[5],
		})
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("failed to read the mount table: %w", err)
	}
	return mounts, nil
}

// unescapeMountPath undoes the kernel's octal escapes (\040 for a space,
// \011, \012, \134) in a mountinfo path.
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b bytes.Buffer
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// source identifies the node directory in the mount table: a bind mount of
// it shows the same Dev and Root.
type source struct {
	Dev  string
	Root string
}

// findSource returns what a bind mount of dir looks like in mounts: the
// device of the mount dir lies in and dir's path inside that file system.
func findSource(mounts []mount, dir string) (source, error) {
	best := -1
	for i, m := range mounts {
		if within(dir, m.Point) && (best < 0 || len(m.Point) >= len(mounts[best].Point)) {
			best = i
		}
	}
	if best < 0 {
		return source{}, fmt.Errorf("no mount holds %s", dir)
	}
	m := mounts[best]
	rel, err := filepath.Rel(m.Point, dir)
	if err != nil {
		return source{}, err
	}
	return source{Dev: m.Dev, Root: filepath.Join(m.Root, rel)}, nil
}

// within reports whether path is dir or lies below it; both are clean.
func within(path, dir string) bool {
	if dir == "/" {
		return strings.HasPrefix(path, "/")
	}
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// mountsAt returns the mounts whose mount point is exactly point, the last
// (topmost) one last.
func mountsAt(mounts []mount, point string) []mount {
	var at []mount
	for _, m := range mounts {
		if m.Point == point {
			at = append(at, m)
		}
	}
	return at
}
