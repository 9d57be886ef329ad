package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// Parsed is one PromQL expression: the metric names it reads, or why it does not parse.
type Parsed struct {
	Metrics []string `json:"metrics"`
	Error   string   `json:"error,omitempty"`
}

// promqlAll parses a JSON array of expressions with Prometheus's own parser
// (github.com/prometheus/prometheus/promql/parser, default options, as Prometheus runs).
func promqlAll(input []byte) ([]Parsed, error) {
	var exprs []string
	if err := json.Unmarshal(input, &exprs); err != nil {
		return nil, fmt.Errorf("expected a JSON array of PromQL expressions: %w", err)
	}
	p := parser.NewParser(parser.Options{})
	out := make([]Parsed, 0, len(exprs))
	for _, expr := range exprs {
		out = append(out, parse(p, expr))
	}
	return out, nil
}

func parse(p parser.Parser, expr string) Parsed {
	node, err := p.ParseExpr(expr)
	if err != nil {
		return Parsed{Metrics: []string{}, Error: err.Error()}
	}
	names, err := metricNames(node)
	if err != nil {
		return Parsed{Metrics: names, Error: err.Error()}
	}
	return Parsed{Metrics: names}
}

// metricNames lists the metric names an expression selects (sorted, once each); a selector
// whose name is not one fixed string cannot be checked against a scrape, and says so.
func metricNames(node parser.Node) ([]string, error) {
	found := map[string]bool{}
	var problem error
	parser.Inspect(node, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		if name == "" {
			for _, m := range vs.LabelMatchers {
				if m.Name != labels.MetricName {
					continue
				}
				if m.Type == labels.MatchEqual {
					name = m.Value
				} else if problem == nil {
					problem = fmt.Errorf("selector %s matches metric names by pattern", vs)
				}
			}
		}
		if name != "" {
			found[name] = true
		}
		return nil
	})
	names := make([]string, 0, len(found))
	for name := range found {
		names = append(names, name)
	}
	slices.Sort(names)
	return names, problem
}

// RuleCheck is `promtool check rules` on one rule file, and each rule's metric names.
type RuleCheck struct {
	Errors []string     `json:"errors"`
	Rules  []RuleReport `json:"rules"`
}

// RuleReport is one rule of a checked file.
type RuleReport struct {
	Group   string   `json:"group"`
	Name    string   `json:"name"`
	Expr    string   `json:"expr"`
	Metrics []string `json:"metrics"`
	Error   string   `json:"error,omitempty"`
}

// checkRules validates a Prometheus rule file (`groups:` …, the spec of a PrometheusRule) with
// model/rulefmt, as `promtool check rules` does: known fields only, valid names, durations,
// PromQL and annotation templates.
func checkRules(input []byte) RuleCheck {
	p := parser.NewParser(parser.Options{})
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	groups, errs := rulefmt.Parse(input, false, model.UTF8Validation, p, logger)
	check := RuleCheck{Errors: []string{}, Rules: []RuleReport{}}
	for _, err := range errs {
		check.Errors = append(check.Errors, err.Error())
	}
	if groups == nil {
		return check
	}
	for _, group := range groups.Groups {
		for _, rule := range group.Rules {
			name := rule.Alert
			if name == "" {
				name = rule.Record
			}
			parsed := parse(p, rule.Expr)
			check.Rules = append(check.Rules, RuleReport{
				Group: group.Name, Name: name, Expr: rule.Expr, Metrics: parsed.Metrics, Error: parsed.Error,
			})
		}
	}
	return check
}
