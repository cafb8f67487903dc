// Command switchboard-bench measures Switchboard's signaling and media paths
// over loopback, each against a minimal baseline run in the same invocation.
//
//	go run ./cmd/switchboard-bench signaling [--users N --callers N --duration D --rate R --warmup D]
//	go run ./cmd/switchboard-bench media [--rooms N --publishers N --subscribers N --bitrate B --fps F --duration D --calls N]
//	go run ./cmd/switchboard-bench media --cluster N [--calls N --failover N --bitrate B --fps F]
//
// The server runs in this process by default (wired as cmd/switchboard wires
// it), or as a child process with --server-bin PATH or --spawn. Output is a
// readable table followed by exactly one line "RESULT {json}". README.md in
// this directory explains every flag and figure.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// roleEnv names the hidden role of a child process started by the bench
// itself (idle users, bare forwarder). Tests dispatch on it in TestMain too.
const roleEnv = "SWITCHBOARD_BENCH_ROLE"

func main() {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(runRole(role))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage: switchboard-bench <signaling|media> [flags]

Run "switchboard-bench signaling -h" or "switchboard-bench media -h" for the
flags of each mode. cmd/switchboard-bench/README.md explains every figure.
`

// run parses the mode and its flags, runs the benchmark and prints the table
// and the RESULT line to stdout. It returns the exit code: 0 on success, 1
// when the benchmark failed, 2 for bad usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var (
		res any
		err error
	)
	switch args[0] {
	case "signaling":
		var o sigOptions
		fs := o.flags(stderr)
		if err := fs.Parse(args[1:]); err != nil {
			return usageCode(err)
		}
		if err := o.validate(); err != nil {
			fmt.Fprintln(stderr, "switchboard-bench:", err)
			return 2
		}
		res, err = runSignaling(ctx, o, stdout, stderr)
	case "media":
		var o mediaOptions
		fs := o.flags(stderr)
		if err := fs.Parse(args[1:]); err != nil {
			return usageCode(err)
		}
		if err := o.validate(); err != nil {
			fmt.Fprintln(stderr, "switchboard-bench:", err)
			return 2
		}
		if o.cluster != 0 {
			res, err = runMediaCluster(ctx, o, stdout, stderr)
		} else {
			res, err = runMedia(ctx, o, stdout, stderr)
		}
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "switchboard-bench: unknown mode %q\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "switchboard-bench:", err)
		return 1
	}
	var line bytes.Buffer
	enc := json.NewEncoder(&line)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(res); err != nil {
		fmt.Fprintln(stderr, "switchboard-bench: encoding result:", err)
		return 1
	}
	fmt.Fprintf(stdout, "RESULT %s", line.Bytes()) // Encode ends it with a newline
	return 0
}

func usageCode(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

// serverFlags are the flags both modes share: where the server runs.
type serverFlags struct {
	serverBin string
	spawn     bool
	verbose   bool
}

func (s *serverFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&s.serverBin, "server-bin", "", "run this switchboard binary as a child process on 127.0.0.1 instead of in-process")
	fs.BoolVar(&s.spawn, "spawn", false, "build ./cmd/switchboard with go build into a temp dir and run it as a child process")
	fs.BoolVar(&s.verbose, "v", false, "show the server's warnings and errors on stderr")
}

// childMode reports whether the server runs as a child process.
func (s serverFlags) childMode() bool { return s.serverBin != "" || s.spawn }

func (s serverFlags) validate() error {
	if s.serverBin != "" && s.spawn {
		return errors.New("--server-bin and --spawn exclude each other")
	}
	return nil
}

// runRole runs a child role started by the bench itself.
func runRole(role string) int {
	var err error
	switch role {
	case roleIdleUsers:
		err = runIdleUsersChild(os.Stdin, os.Stdout)
	case roleBareForwarder:
		err = runBareForwarderChild(os.Stdin, os.Stdout)
	case roleRelay:
		err = runRelayChild(os.Stdin, os.Stdout)
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "switchboard-bench child:", err)
		return 1
	}
	return 0
}
