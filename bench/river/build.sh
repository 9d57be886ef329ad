#!/usr/bin/env bash
# Build river-bench (bench/river/main.go: River's side of bench/throughput.py), once per machine.
# River and the rest are the versions pinned in bench/river/go.mod (with go.sum); nothing is
# downloaded except Go modules through the Go module proxy.
#
# The binary goes to
#   ${EVENTIX_TOOLS_CACHE:-$HOME/.cache/eventix-operator/tools}/river-bench-<river version>-<src>/river-bench
# outside the repository, where <src> is a hash of main.go, go.mod and go.sum: an edit of the
# program or of a pin builds a new binary, and a binary that is already there is not rebuilt.
#
# Usage: bench/river/build.sh [--print-path]
#   --print-path   after building, print the binary's absolute path on stdout
# Progress goes to stderr; the go command's own output only if the build fails. The Go command is
# $GO if set, else `go` on PATH, else /usr/local/go/bin/go. Exit status 3: no Go toolchain.
set -euo pipefail

# Everything is in main, read whole before it runs (as tools/kube/build.sh).
main() {
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    cache="${EVENTIX_TOOLS_CACHE:-$HOME/.cache/eventix-operator/tools}"
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

    version="$(awk '($1 == "github.com/riverqueue/river" || ($1 == "require" && $2 == "github.com/riverqueue/river")) {
        print ($1 == "require" ? $3 : $2); exit }' "$here/go.mod")"
    if [ -z "$version" ]; then
        echo "build.sh: $here/go.mod does not require github.com/riverqueue/river" >&2
        exit 1
    fi
    src="$(cat "$here/main.go" "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-12)"
    dir="$cache/river-bench-$version-$src"
    out="$dir/river-bench"

    if [ ! -x "$out" ]; then
        local go
        if [ -n "${GO:-}" ]; then
            go="$(command -v "$GO" 2>/dev/null)" || go=""
        elif command -v go >/dev/null 2>&1; then
            go="$(command -v go)"
        elif [ -x /usr/local/go/bin/go ]; then
            go=/usr/local/go/bin/go
        else
            go=""
        fi
        if [ -z "$go" ]; then
            echo "build.sh: cannot build river-bench (River $version): the Go toolchain is missing (need 'go' 1.26 or newer: \$GO, on PATH, or /usr/local/go/bin/go)" >&2
            exit 3
        fi
        mkdir -p "$dir"
        # One builder at a time (two bench runs may start together).
        exec 9>"$dir/.lock"
        flock 9
        if [ ! -x "$out" ]; then
            echo "building river-bench on River $version (first time on this machine, up to a minute)…" >&2
            local start=$SECONDS tmp="$out.tmp.$$" log="$dir/build.log.$$"
            if ! (
                cd "$here"
                GOFLAGS="-trimpath -mod=readonly ${GOFLAGS:-}" CGO_ENABLED=0 "$go" build -ldflags="-s -w" -o "$tmp" .
            ) >"$log" 2>&1; then
                cat "$log" >&2
                rm -f "$tmp" "$log"
                echo "build.sh: building river-bench (River $version) failed (see the go output above)" >&2
                exit 1
            fi
            rm -f "$log"
            mv -f "$tmp" "$out"
            echo "built river-bench (River $version) in $((SECONDS - start))s: $out" >&2
        fi
        exec 9>&-
    fi
    if [ "$print_path" -eq 1 ]; then
        echo "$out"
    fi
}

main "$@"; exit
