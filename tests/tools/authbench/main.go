// Command authbench prepares an etcd-compatible server for authenticated
// benchmarks and measures Authenticate throughput (scripts/bench-auth.sh).
//
//	authbench setup --endpoint host:port [--perms N]
//	    creates root (password "root") holding the root role, user "bench"
//	    (password "bench") whose role grants READWRITE on every key plus N
//	    unrelated prefix permissions (so the permission check has a real
//	    interval set to search), and enables auth.
//	authbench authenticate --endpoint host:port [--clients C] [--duration D]
//	    calls Authenticate(bench) from C concurrent clients for D and prints
//	    requests/s and latency percentiles in etcd benchmark's format.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: authbench setup|authenticate [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	endpoint := fs.String("endpoint", "127.0.0.1:2379", "server address")
	perms := fs.Int("perms", 100, "setup: unrelated prefix permissions of the bench role")
	clients := fs.Int("clients", 8, "authenticate: concurrent clients")
	duration := fs.Duration("duration", 10*time.Second, "authenticate: how long to run")
	fs.Parse(os.Args[2:])
	conn, err := grpc.NewClient(*endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fail(err)
	}
	defer conn.Close()
	switch os.Args[1] {
	case "setup":
		setup(pb.NewAuthClient(conn), *perms)
	case "authenticate":
		authenticate(pb.NewAuthClient(conn), *clients, *duration)
	default:
		fail(fmt.Errorf("unknown command %q", os.Args[1]))
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "authbench:", err)
	os.Exit(1)
}

func setup(ac pb.AuthClient, nperms int) {
	ctx := context.Background()
	steps := []func(context.Context) error{
		func(ctx context.Context) error {
			_, err := ac.UserAdd(ctx, &pb.AuthUserAddRequest{Name: "root", Password: "root"})
			return err
		},
		func(ctx context.Context) error {
			_, err := ac.RoleAdd(ctx, &pb.AuthRoleAddRequest{Name: "root"})
			return err
		},
		func(ctx context.Context) error {
			_, err := ac.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: "root", Role: "root"})
			return err
		},
		func(ctx context.Context) error {
			_, err := ac.UserAdd(ctx, &pb.AuthUserAddRequest{Name: "bench", Password: "bench"})
			return err
		},
		func(ctx context.Context) error {
			_, err := ac.RoleAdd(ctx, &pb.AuthRoleAddRequest{Name: "bench"})
			return err
		},
		func(ctx context.Context) error {
			for i := 0; i < nperms; i++ {
				p := fmt.Sprintf("/tenant/%04d/", i)
				_, err := ac.RoleGrantPermission(ctx, &pb.AuthRoleGrantPermissionRequest{Name: "bench",
					Perm: &authpb.Permission{PermType: authpb.READ, Key: []byte(p), RangeEnd: []byte(p[:len(p)-1] + "0")}})
				if err != nil {
					return err
				}
			}
			_, err := ac.RoleGrantPermission(ctx, &pb.AuthRoleGrantPermissionRequest{Name: "bench",
				Perm: &authpb.Permission{PermType: authpb.READWRITE, Key: []byte{0}, RangeEnd: []byte{0}}})
			return err
		},
		func(ctx context.Context) error {
			_, err := ac.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: "bench", Role: "bench"})
			return err
		},
		func(ctx context.Context) error {
			_, err := ac.AuthEnable(ctx, &pb.AuthEnableRequest{})
			return err
		},
	}
	for i, s := range steps {
		if err := s(ctx); err != nil {
			fail(fmt.Errorf("setup step %d: %w", i, err))
		}
	}
	// Check that the bench user works.
	if _, err := ac.Authenticate(ctx, &pb.AuthenticateRequest{Name: "bench", Password: "bench"}); err != nil {
		fail(err)
	}
	fmt.Println("auth enabled; users root/root and bench/bench")
}

func authenticate(ac pb.AuthClient, clients int, d time.Duration) {
	var mu sync.Mutex
	var lat []time.Duration
	errs := map[string]int{}
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Now().Before(deadline) {
				t0 := time.Now()
				_, err := ac.Authenticate(context.Background(), &pb.AuthenticateRequest{Name: "bench", Password: "bench"})
				if err != nil {
					mu.Lock()
					errs[err.Error()]++
					mu.Unlock()
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(float64(len(lat))*p))].Seconds()
	}
	fmt.Printf("Summary:\n  Total:\t%.4f secs.\n  Requests/sec:\t%.4f\n", elapsed.Seconds(), float64(len(lat))/elapsed.Seconds())
	fmt.Printf("Latency distribution:\n  50%% in %.4f secs.\n  90%% in %.4f secs.\n  99%% in %.4f secs.\n", pct(0.5), pct(0.9), pct(0.99))
	if len(errs) > 0 {
		fmt.Println("Error distribution:")
		for e, n := range errs {
			fmt.Printf("  [%d]\t%s\n", n, e)
		}
	}
}
