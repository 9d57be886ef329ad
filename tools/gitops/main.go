// Command eventix-gitops asks the tools that GitOps controllers and Prometheus embed what they
// make of our resources, dashboards and alert rules; the chart and operator tests call it.
//
//	eventix-gitops kstatus               < objects.json   what Flux's kstatus computes, per object
//	eventix-gitops argocd-health SCRIPT  < objects.json   what Argo CD's health check says, per object
//	eventix-gitops promql                < exprs.json     the metric names each PromQL expression reads
//	eventix-gitops rules                 < groups.yaml    `promtool check rules` on a rule file, and the
//	                                                      metric names each rule reads
//
// Objects are Kubernetes objects as JSON: one object, an array of them, or a List with items.
// Every command prints one JSON document on stdout; a usage error exits 2, anything the tools
// refuse is reported in that document (and exits 0), so the caller sees every verdict at once.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	var out any
	switch os.Args[1] {
	case "kstatus":
		out, err = kstatusAll(input)
	case "argocd-health":
		if len(os.Args) != 3 {
			usage()
		}
		var script []byte
		script, err = os.ReadFile(os.Args[2])
		if err == nil {
			out, err = argoHealthAll(input, string(script))
		}
	case "promql":
		out, err = promqlAll(input)
	case "rules":
		out = checkRules(input)
	default:
		usage()
	}
	if err != nil {
		fail(err)
	}
	encoder := json.NewEncoder(os.Stdout)
	encoder.SetIndent("", "  ")
	encoder.SetEscapeHTML(false)
	if err := encoder.Encode(out); err != nil {
		fail(err)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: eventix-gitops kstatus|promql|rules < input, or eventix-gitops argocd-health SCRIPT.lua < objects.json")
	os.Exit(2)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "eventix-gitops:", err)
	os.Exit(1)
}

// Verdict is what a tool says of one object.
type Verdict struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}
