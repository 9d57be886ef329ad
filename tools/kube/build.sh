#!/usr/bin/env bash
# Build the Kubernetes test tools from Go modules, once per machine:
#   kube-apiserver, kubectl  <- k8s.io/kubernetes         (tools/kube/k8s/go.mod)
#   etcd                     <- go.etcd.io/etcd/server/v3 (tools/kube/k8s/go.mod, the version
#                               k8s.io/kubernetes itself depends on)
#   helm                     <- helm.sh/helm/v3           (tools/kube/helm/go.mod)
# The versions are the ones pinned in those go.mod files (with go.sum); nothing is downloaded
# except Go modules through the Go module proxy.
#
# Binaries go to ${EVENTIX_TOOLS_CACHE:-$HOME/.cache/eventix-operator/tools}/<name>-<version>/<name>,
# outside the repository. A binary that is already there is not rebuilt.
#
# Usage: tools/kube/build.sh [--print-paths] [kube-apiserver|etcd|kubectl|helm ...]
#   no names        build all four
#   --print-paths   after building, print "<name>=<absolute path>" for each name on stdout
# Progress goes to stderr. The Go command is $GO if set, else `go` on PATH, else
# /usr/local/go/bin/go.
set -euo pipefail

# Everything is in main, read whole before it runs: editing this file during a (long) build
# cannot change what the running build does.
main() {
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    cache="${EVENTIX_TOOLS_CACHE:-$HOME/.cache/eventix-operator/tools}"

    print_paths=0
    names=()
    for arg in "$@"; do
        case "$arg" in
            --print-paths) print_paths=1 ;;
            kube-apiserver | etcd | kubectl | helm) names+=("$arg") ;;
            -h | --help)
                awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
                exit 0
                ;;
            *)
                echo "build.sh: unknown argument '$arg' (expected kube-apiserver, etcd, kubectl, helm or --print-paths)" >&2
                exit 2
                ;;
        esac
    done
    if [ "${#names[@]}" -eq 0 ]; then
        names=(kube-apiserver etcd kubectl helm)
    fi

    # The version a go.mod pins for a module (its require line).
    pinned() { # <go.mod> <module path>
        local v
        v="$(awk -v m="$2" '($1 == m || ($1 == "require" && $2 == m)) && $0 !~ /=>/ {
            print ($1 == "require" ? $3 : $2); exit }' "$1")"
        if [ -z "$v" ]; then
            echo "build.sh: $1 does not require $2" >&2
            exit 1
        fi
        printf '%s' "$v"
    }

    k8s_mod="$here/k8s/go.mod"
    helm_mod="$here/helm/go.mod"
    kube_version="$(pinned "$k8s_mod" k8s.io/kubernetes)"
    etcd_version="$(pinned "$k8s_mod" go.etcd.io/etcd/server/v3)"
    helm_version="$(pinned "$helm_mod" helm.sh/helm/v3)"

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

    # Ldflags: strip symbols, and stamp the version the binaries report (/version, kubectl version,
    # helm version); a plain `go build` would report v0.0.0-master.
    kube_ldflags() {
        local minor="${kube_version#v1.}"
        minor="${minor%%.*}"
        printf '%s' "-s -w -X k8s.io/component-base/version.gitVersion=$kube_version \
    -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
    -X k8s.io/component-base/version.gitTreeState=clean \
    -X k8s.io/client-go/pkg/version.gitVersion=$kube_version \
    -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
    }

    build_one() { # <name>
        local name="$1" version moddir pkg ldflags dir out
        case "$name" in
            kube-apiserver) version="$kube_version" moddir="$here/k8s" pkg=k8s.io/kubernetes/cmd/kube-apiserver ldflags="$(kube_ldflags)" ;;
            kubectl) version="$kube_version" moddir="$here/k8s" pkg=k8s.io/kubernetes/cmd/kubectl ldflags="$(kube_ldflags)" ;;
            etcd) version="$etcd_version" moddir="$here/k8s" pkg=./cmd/etcd ldflags="-s -w" ;;
            helm) version="$helm_version" moddir="$here/helm" pkg=helm.sh/helm/v3/cmd/helm ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version -X helm.sh/helm/v3/internal/version.gitTreeState=clean" ;;
        esac
        dir="$cache/$name-$version"
        out="$dir/$name"
        if [ ! -x "$out" ]; then
            local go
            if ! go="$(find_go)"; then
                echo "build.sh: cannot build $name $version: the Go toolchain is missing (need 'go' 1.26 or newer: \$GO, on PATH, or /usr/local/go/bin/go). Install Go, or set EVENTIX_TEST_KUBECONFIG to use an existing cluster." >&2
                exit 1
            fi
            mkdir -p "$dir"
            # One builder per binary at a time (two pytest sessions may start together).
            exec 9>"$dir/.lock"
            flock 9
            if [ ! -x "$out" ]; then
                echo "building $name $version (first time on this machine, takes several minutes)…" >&2
                local start=$SECONDS tmp="$out.tmp.$$" log="$dir/build.log"
                # Go's own lines (a "go: downloading" per module) go to a log, shown on failure.
                (
                    cd "$moddir"
                    GOFLAGS="-trimpath ${GOFLAGS:-}" CGO_ENABLED=0 "$go" build -ldflags="$ldflags" -o "$tmp" "$pkg"
                ) >"$log" 2>&1 || {
                    rm -f "$tmp"
                    cat "$log" >&2
                    echo "build.sh: building $name $version failed (the go output is above, and in $log)" >&2
                    exit 1
                }
                mv -f "$tmp" "$out"
                echo "built $name $version in $((SECONDS - start))s: $out" >&2
            fi
            exec 9>&-
        fi
        if [ "$print_paths" -eq 1 ]; then
            echo "$name=$out"
        fi
    }

    for name in "${names[@]}"; do
        build_one "$name"
    done
}

main "$@"; exit
