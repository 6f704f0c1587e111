// promlint lints a Prometheus text exposition read from stdin with the rules that
// `promtool check metrics` applies (client_golang's promlint), without building all of
// Prometheus: one line per problem, exit status 1 if there is any, 2 if the input does
// not parse.
package main

import (
	"fmt"
	"os"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

func main() {
	problems, err := promlint.New(os.Stdin).Lint()
	if err != nil {
		fmt.Fprintf(os.Stderr, "promlint: the exposition does not parse: %v\n", err)
		os.Exit(2)
	}
	for _, problem := range problems {
		fmt.Printf("%s: %s\n", problem.Metric, problem.Text)
	}
	if len(problems) > 0 {
		os.Exit(1)
	}
}
