package raftnode

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// PeerDial returns the gRPC target and dial options that reach a peer URL,
// with etcd's schemes: http and unix in the clear, https and unixs over
// tlsConf; unix and unixs dial the Unix socket named by the URL's host
// (etcd's transport names its sockets host:port, relative to the working
// directory).
func PeerDial(raw string, tlsConf *tls.Config) (target string, opts []grpc.DialOption, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", nil, fmt.Errorf("raftnode: peer URL %q: %w", raw, err)
	}
	var creds credentials.TransportCredentials
	switch u.Scheme {
	case "http", "unix":
		creds = insecure.NewCredentials()
	case "https", "unixs":
		if tlsConf == nil {
			return "", nil, fmt.Errorf("raftnode: peer URL %q needs TLS but no peer TLS is configured", raw)
		}
		creds = credentials.NewTLS(tlsConf)
	default:
		return "", nil, fmt.Errorf("raftnode: peer URL %q: unsupported scheme", raw)
	}
	opts = []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if u.Scheme == "unix" || u.Scheme == "unixs" {
		opts = append(opts, grpc.WithContextDialer(dialUnix))
	}
	return "passthrough:///" + u.Host, opts, nil
}

func dialUnix(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", path)
}
