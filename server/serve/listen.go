package serve

import (
	"errors"
	"io/fs"
	"net"
	"net/url"
	"os"

	"github.com/metastore-dev/metastore/server/config"
)

// ListenURL binds a listen URL: TCP for http and https, a Unix socket for
// unix and unixs, whose path is the URL's host:port as etcd names it
// (relative to the working directory). A socket file left behind by a
// killed process is removed first, as etcd does; a clean Close removes the
// socket.
func ListenURL(u *url.URL) (net.Listener, error) {
	if config.IsUnixScheme(u.Scheme) {
		if err := os.Remove(u.Host); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return net.Listen("unix", u.Host)
	}
	return net.Listen("tcp", u.Host)
}
