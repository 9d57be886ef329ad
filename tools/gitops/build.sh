#!/usr/bin/env bash
# Build eventix-gitops (this directory: kstatus, Argo CD's Lua health checks, PromQL and rule
# files, as the tools themselves judge them) from Go modules, once per machine:
#   sigs.k8s.io/cli-utils          kstatus, what Flux computes
#   github.com/yuin/gopher-lua     the Lua 5.1 Argo CD embeds (layeh.com/gopher-json, as Argo CD)
#   github.com/prometheus/prometheus  promql/parser and model/rulefmt (`promtool check rules`)
# at the versions go.mod pins (with go.sum); nothing is downloaded except Go modules through
# the Go module proxy.
#
# The binary goes to ${EVENTIX_TOOLS_CACHE:-$HOME/.cache/eventix-operator/tools}/eventix-gitops-<version>/
# eventix-gitops, outside the repository; <version> is a digest of this directory's go.mod,
# go.sum and *.go, so a changed program or pin builds a new binary and an unchanged one is
# never rebuilt.
#
# Usage: tools/gitops/build.sh [--print-path]
#   --print-path   after building, print the binary's absolute path on stdout
# Progress goes to stderr. The Go command is $GO if set, else `go` on PATH, else
# /usr/local/go/bin/go.
set -euo pipefail

# Everything is in main, read whole before it runs (see tools/kube/build.sh).
main() {
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    cache="${EVENTIX_TOOLS_CACHE:-$HOME/.cache/eventix-operator/tools}"
    name=eventix-gitops

    print_path=0
    for arg in "$@"; do
        case "$arg" in
            --print-path) print_path=1 ;;
            -h | --help)
                awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
                exit 0
                ;;
            *)
                echo "build.sh: unknown argument '$arg' (expected --print-path)" >&2
                exit 2
                ;;
        esac
    done

    find_go() { # $GO if set, else go on PATH, else the usual install location
        if [ -n "${GO:-}" ]; then
            command -v "$GO" 2>/dev/null || return 1
        elif command -v go >/dev/null 2>&1; then
            command -v go
        elif [ -x /usr/local/go/bin/go ]; then
            echo /usr/local/go/bin/go
        else
            return 1
        fi
    }

    local sources=("$here"/go.mod "$here"/go.sum "$here"/*.go) # a glob comes sorted
    version="$(cat "${sources[@]}" | sha256sum | cut -c1-12)"
    dir="$cache/$name-$version"
    out="$dir/$name"
    if [ ! -x "$out" ]; then
        local go
        if ! go="$(find_go)"; then
            echo "build.sh: cannot build $name: the Go toolchain is missing (need 'go' 1.26.7 or newer, as github.com/prometheus/prometheus v0.316.0 requires: \$GO, on PATH, or /usr/local/go/bin/go)." >&2
            exit 1
        fi
        mkdir -p "$dir"
        # One builder at a time (two pytest sessions may start together).
        exec 9>"$dir/.lock"
        flock 9
        if [ ! -x "$out" ]; then
            echo "building $name $version (first time on this machine, takes a minute or two)…" >&2
            local start=$SECONDS tmp="$out.tmp.$$" log="$dir/build.log.$$"
            if ! (
                cd "$here"
                GOFLAGS="-trimpath -mod=readonly ${GOFLAGS:-}" CGO_ENABLED=0 "$go" build -ldflags="-s -w" -o "$tmp" .
            ) >"$log" 2>&1; then
                cat "$log" >&2
                rm -f "$tmp" "$log"
                echo "build.sh: building $name $version failed (see the go output above)" >&2
                exit 1
            fi
            rm -f "$log"
            mv -f "$tmp" "$out"
            echo "built $name $version in $((SECONDS - start))s: $out" >&2
        fi
        exec 9>&-
    fi
    if [ "$print_path" -eq 1 ]; then
        echo "$out"
    fi
}

main "$@"; exit
