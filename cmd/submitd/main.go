// Command submitd is the outgoing-mail SMTP server of a web-hosting provider,
// and its administration tool. Run "submitd help" for the subcommands.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"submitd/internal/config"
)

// command is one subcommand. run gets the arguments after the subcommand's
// name (and after any verb, for grouped commands).
type command struct {
	name    string
	summary string
	// usage is the argument synopsis shown by -h.
	usage string
	run   func(e *env, args []string) error
}

// commands is the subcommand table; files add to it in init.
var commands = map[string]*command{}

func register(c *command) { commands[c.name] = c }

// env is what a subcommand runs with: its streams and its flag set.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	fs             *flag.FlagSet
	configPath     *string
	// createDB lets openDB create the database when it does not exist.
	createDB bool
}

// usageError makes the command print its usage.
type usageError string

func (u usageError) Error() string { return string(u) }

// errSilent is returned when the error has already been printed.
var errSilent = errors.New("")

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run runs one subcommand and returns the exit status: 0 success, 1 failure,
// 2 bad usage.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		if len(args) > 1 {
			if c, ok := commands[args[1]]; ok {
				printUsage(stderr, c, nil)
				return 0
			}
		}
		if len(args) == 0 {
			// No command is a usage error: the help goes to stderr.
			printHelp(stderr)
			return 2
		}
		printHelp(stdout)
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "submitd: unknown command %q; run \"submitd help\"\n", args[0])
		return 2
	}
	fs := flag.NewFlagSet("submitd "+c.name, flag.ContinueOnError)
	// The flag package's own messages are silenced so that a bad flag is
	// reported once, in the same form as every other usage error.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, fs: fs}
	e.configPath = fs.String("config", "", "config file (default $"+config.EnvVar+", else ./"+config.DefaultFile+" if present, else built-in defaults)")
	err := c.run(e, args[1:])
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		printUsage(stderr, c, fs)
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "submitd %s: %s\n", c.name, ue)
		printUsage(stderr, c, fs)
		return 2
	case errors.Is(err, errSilent):
		return 1
	default:
		fmt.Fprintf(stderr, "submitd %s: %v\n", c.name, err)
		return 1
	}
}

func printHelp(w io.Writer) {
	fmt.Fprintln(w, "submitd: the outgoing-mail SMTP server of a web-hosting provider")
	fmt.Fprintln(w, "\nUsage: submitd COMMAND [-config FILE] [ARGS]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun \"submitd COMMAND -h\" for a command's usage.")
}

func printUsage(w io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage:\n")
	for _, l := range strings.Split(strings.TrimSpace(c.usage), "\n") {
		fmt.Fprintf(w, "  submitd %s\n", strings.TrimSpace(l))
	}
	fmt.Fprintf(w, "\n%s\n", c.summary)
	if fs != nil {
		fmt.Fprintf(w, "\nFlags:\n")
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
}

// parse parses flags that may stand anywhere among the arguments (so that
// "account remove a@b.cz -force" works as well as "-force a@b.cz") and returns
// the positional arguments.
func (e *env) parse(args []string) ([]string, error) {
	var pos []string
	for {
		if err := e.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError(err.Error())
		}
		rest := e.fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// config loads the configuration the flags name.
func (e *env) config() (*config.Config, error) {
	return config.Load(config.Path(*e.configPath))
}

// want checks the number of positional arguments.
func want(args []string, min, max int) error {
	switch {
	case len(args) < min:
		return usageError("missing argument")
	case max >= 0 && len(args) > max:
		return usageError(fmt.Sprintf("unexpected argument %q", args[max]))
	}
	return nil
}

// printable replaces control characters in text that came from clients or
// remote servers (headers, replies, HELO names), so that printing it cannot
// drive the operator's terminal with escape sequences.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' && r != '\t' || r == 0x7f || r >= 0x80 && r < 0xa0 {
			return '?'
		}
		return r
	}, s)
}
