// Command sluice is the one binary of Sluice: `sluice manager` runs the operator (the control
// plane), `sluice runner` executes one run of a pipeline inside its Job (the data plane).
package main

import (
	"fmt"
	"os"
)

const usage = `usage: sluice <command> [flags]

commands:
  manager   run the ETLPipeline operator (control plane)
  runner    execute one run of a pipeline (data plane; started by the operator in a Job)
  kubectl   inspect and control pipelines (the kubectl plugin: kubectl sluice, when run as kubectl-sluice)
  version   print the version

Run 'sluice <command> -h' for a command's flags.
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if args, ok := kubectlPluginArgs(os.Args[0], os.Args[1:]); ok {
		os.Exit(runKubectl(args, os.Stdout, os.Stderr))
	}
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	switch cmd {
	case "manager":
		os.Exit(runManager(args))
	case "runner":
		os.Exit(runRunner(args))
	case "kubectl":
		os.Exit(runKubectl(args, os.Stdout, os.Stderr))
	case "version", "--version":
		fmt.Println("sluice", version)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "sluice: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
}
