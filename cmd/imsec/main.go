// Command imsec is IMS access security (TS 33.203) in userspace: SIP-AKA,
// sec-agree and ESP-in-UDP (RFC 3948) through NAT, with no kernel IPsec.
//
// Each subcommand lives in its own file and registers itself in init; main
// only dispatches, prints the error and sets the exit code.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// command is one `imsec NAME ...` subcommand.
type command struct {
	name  string
	usage string // one line: "aka vector|auts|ue ..."
	short string // one-line description for `imsec help`
	run   func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = map[string]command{}

func register(c command) {
	if _, dup := commands[c.name]; dup {
		panic("imsec: duplicate command " + c.name)
	}
	commands[c.name] = c
}

// errUsage marks an error caused by bad flags or arguments: exit code 2.
var errUsage = errors.New("usage")

// usageErrorf returns an error that main reports as a usage error (exit 2).
func usageErrorf(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errUsage}, a...)...)
}

// exitError carries a chosen exit code with its message.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		if len(args) > 1 {
			if c, ok := commands[args[1]]; ok {
				return runCommand(ctx, c, []string{"--help"}, stdout, stderr)
			}
		}
		printHelp(stdout)
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "imsec: unknown command %q (see 'imsec help')\n", args[0])
		return 2
	}
	return runCommand(ctx, c, args[1:], stdout, stderr)
}

func runCommand(ctx context.Context, c command, args []string, stdout, stderr io.Writer) int {
	err := c.run(ctx, args, stdout, stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "imsec %s: %v\n", c.name, trimUsage(err))
		return 2
	}
	fmt.Fprintf(stderr, "imsec %s: %v\n", c.name, err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

func trimUsage(err error) string {
	s := err.Error()
	const p = "usage: "
	if len(s) > len(p) && s[:len(p)] == p {
		return s[len(p):]
	}
	return s
}

func printHelp(w io.Writer) {
	fmt.Fprintln(w, `imsec: IMS access security (TS 33.203) in userspace.
SIP-AKA (RFC 3310) with Milenage, sec-agree (RFC 3329) and ESP in UDP
(RFC 4303, RFC 3948) through NAT, with no kernel IPsec and no root.

Usage: imsec COMMAND [flags]

Commands:`)
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s %s\n", n, commands[n].short)
	}
	fmt.Fprintln(w, `
Run 'imsec help COMMAND' or 'imsec COMMAND --help' for a command's flags.`)
}
