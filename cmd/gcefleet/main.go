// Command gcefleet is the one command-line tool of gcefleet: it serves the
// Compute Engine emulator, runs the Machine Provider and GCE Backend, leases
// machines and cleans up after runs.
//
// Every flag can also be set through the environment: --project is
// GCEFLEET_PROJECT, the emulator's --listen is GCEFLEET_EMULATOR_LISTEN, and
// so on (--help names each). A flag given on the command line wins over the
// environment.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
	// The time zones the backend's schedules name, for a machine (or
	// container image) without /usr/share/zoneinfo.
	_ "time/tzdata"

	"github.com/gcefleet/gcefleet/provider/client"
)

// command is one subcommand of gcefleet.
type command struct {
	name    string
	summary string // one line for the command list
	usage   string // argument synopsis, after "gcefleet NAME"
	help    string // what it does and an example, for NAME --help
	// takesArgs says the command takes arguments after its flags (lease
	// ids); the others refuse any.
	takesArgs bool
	// flags declares the command's flags on fs and returns the function that
	// runs it once they are parsed.
	flags func(fs *flag.FlagSet) func(ctx context.Context, env *environ, args []string) error
	// envPrefix starts the environment variable of each flag, when not
	// GCEFLEET_: the emulator's are its own, so that a variable exported
	// for one program does not change another's meaning.
	envPrefix string
	// envNames gives the variable of a flag whose name would mislead.
	envNames map[string]string
	// envOld gives the variable a flag was read from before, still read
	// (with a notice) when the new one is not set.
	envOld map[string]string
}

// environ is what a command may touch of the outside world, so that tests can
// run commands in-process.
type environ struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	// progress is how often a long wait looks again and says how it
	// goes (lease --wait, watch); 0 is each command's default. Tests
	// shorten it.
	progress time.Duration
}

// logger returns a logger that writes to the command's standard error,
// without timestamps: for a person watching a command, not for a log file.
func (e *environ) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
}

// usageError marks an error caused by how the command was called; it makes the
// program exit with status 2 instead of 1.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

func commands() []*command {
	return []*command{
		emulatorCommand(),
		serveCommand(),
		leaseCommand(),
		extendCommand(),
		releaseCommand(),
		watchCommand(),
		machinesCommand(),
		leasesCommand(),
		planCommand(),
		gcCommand(),
		doctorCommand(),
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	env := &environ{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	os.Exit(run(ctx, env, os.Args[1:]))
}

// run executes the command line args and returns the exit status.
func run(ctx context.Context, env *environ, args []string) int {
	err := dispatch(ctx, env, args)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(*usageError)):
		fmt.Fprintf(env.stderr, "gcefleet: %s\n", cleanLines(err.Error()))
		return 2
	default:
		// An error can carry a server's message: clean it as its data.
		fmt.Fprintf(env.stderr, "gcefleet: %s\n", cleanLines(withoutLayers(err)))
		if errors.Is(err, client.ErrUnreachable) {
			fmt.Fprintln(env.stderr, "gcefleet: is gcefleet serve running there? --provider (or GCEFLEET_PROVIDER) gives its address")
		}
		return 1
	}
}

// withoutLayers is err's message without the names of the layers it went
// through ("provider: ", "store: "), which tell a user nothing: an API
// error reads as the provider's message alone.
func withoutLayers(err error) string {
	msg := err.Error()
	var ae *client.Error
	if errors.As(err, &ae) {
		msg = strings.Replace(msg, ae.Error(), ae.Message, 1)
	}
	return strings.ReplaceAll(msg, "store: ", "")
}

func dispatch(ctx context.Context, env *environ, args []string) error {
	cmds := commands()
	if len(args) == 0 {
		printUsage(env.stderr, cmds)
		return usagef("no command given; run 'gcefleet help' for the list")
	}
	name := args[0]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			return dispatch(ctx, env, []string{args[1], "--help"})
		}
		printUsage(env.stdout, cmds)
		return nil
	}
	for _, c := range cmds {
		if c.name == name {
			return c.run(ctx, env, args[1:])
		}
	}
	return usagef("unknown command %q; run 'gcefleet help' for the list", name)
}

func printUsage(w io.Writer, cmds []*command) {
	fmt.Fprint(w, `gcefleet gives Go programs machines on Google Compute Engine.

Usage:
  gcefleet <command> [flags]

Commands:
`)
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Run 'gcefleet <command> --help' for a command's flags and an example.
Every flag can be set in the environment too: --project is GCEFLEET_PROJECT.
`)
}

func (c *command) run(ctx context.Context, env *environ, args []string) error {
	fs := flag.NewFlagSet("gcefleet "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	body := c.flags(fs)
	// The flag package prints the usage on every error; a mistake deserves
	// one line, so the help is printed only when asked for.
	fs.Usage = func() {}
	bad := teach(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.printHelp(env.stdout, fs)
			return err
		}
		if *bad != nil {
			return usagef("%s: %v", c.name, *bad)
		}
		return usagef("%s: %v (see 'gcefleet %s --help')", c.name, strings.Replace(err.Error(), " -", " --", 1), c.name)
	}
	if err := c.setFromEnv(fs, env); err != nil {
		return usagef("%s: %v", c.name, err)
	}
	if !c.takesArgs && fs.NArg() > 0 {
		return usagef("%s takes no arguments, but was given %q; flags are written --name value, and go before any argument", c.name, fs.Args())
	}
	return body(ctx, env, fs.Args())
}

// teachingValue is a flag's value whose parse error says what is wrong and
// how to write it, rather than the flag package's "parse error".
type teachingValue struct {
	flag.Value
	name string
	bad  *error // where the last error goes, for run to report alone
}

func (v *teachingValue) Set(s string) error {
	err := v.Value.Set(s)
	if err == nil {
		return nil
	}
	switch v.Value.(flag.Getter).Get().(type) {
	case time.Duration:
		err = fmt.Errorf("--%s: %q is not a duration: write 90s, 15m or 2h", v.name, s)
	case bool:
		err = fmt.Errorf("--%s: %q is not a boolean: write --%s, --%s=true or --%s=false", v.name, s, v.name, v.name, v.name)
	case int, int64, uint, uint64:
		err = fmt.Errorf("--%s: %q is not a whole number: write, for example, 10", v.name, s)
	case float64:
		err = fmt.Errorf("--%s: %q is not a number: write, for example, 0.5", v.name, s)
	default:
		err = fmt.Errorf("--%s: %q: %w", v.name, s, err)
	}
	*v.bad = err
	return err
}

// boolTeachingValue keeps a boolean flag a boolean flag (--json without a
// value) for the flag package.
type boolTeachingValue struct{ *teachingValue }

func (boolTeachingValue) IsBoolFlag() bool { return true }

// teach makes every flag of fs explain its bad values, and returns where
// the last one's explanation is kept.
func teach(fs *flag.FlagSet) *error {
	bad := new(error)
	fs.VisitAll(func(f *flag.Flag) {
		if _, ok := f.Value.(flag.Getter); !ok {
			return // a flag of our own type explains itself
		}
		tv := &teachingValue{Value: f.Value, name: f.Name, bad: bad}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			f.Value = boolTeachingValue{tv}
		} else {
			f.Value = tv
		}
	})
	return bad
}

// unteach returns f as it was declared, for flag.UnquoteUsage's type names.
func unteach(f *flag.Flag) *flag.Flag {
	g := *f
	switch v := f.Value.(type) {
	case *teachingValue:
		g.Value = v.Value
	case boolTeachingValue:
		g.Value = v.Value
	}
	return &g
}

func (c *command) printHelp(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: gcefleet %s %s\n\n%s\n", c.name, c.usage, c.help)
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n == 0 {
		return
	}
	fmt.Fprintf(w, "\nFlags (each also read from the environment variable shown):\n")
	fs.VisitAll(func(f *flag.Flag) {
		typ, usage := flag.UnquoteUsage(unteach(f))
		name := "--" + f.Name
		if typ != "" {
			name += " " + typ
		}
		fmt.Fprintf(w, "  %s\t[%s]\n      %s", name, c.envName(f.Name), usage)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "[]" && f.DefValue != "0s" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}

// envName is the environment variable that sets the flag name.
func (c *command) envName(name string) string {
	if n, ok := c.envNames[name]; ok {
		return n
	}
	prefix := c.envPrefix
	if prefix == "" {
		prefix = "GCEFLEET_"
	}
	return prefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// setFromEnv sets every flag that the command line left unset from its
// environment variable, if that is set.
func (c *command) setFromEnv(fs *flag.FlagSet, env *environ) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || given[f.Name] {
			return
		}
		name := c.envName(f.Name)
		v := env.getenv(name)
		if old := c.envOld[f.Name]; v == "" && old != "" {
			if v = env.getenv(old); v != "" {
				fmt.Fprintf(env.stderr, "gcefleet %s: %s is deprecated: set %s instead\n", c.name, old, name)
				name = old
			}
		}
		if v == "" {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = fmt.Errorf("%s=%q: %w", name, v, e)
		}
	})
	return err
}
