# Shared set-up of scripts/demo and scripts/test: a line of our own per step, the
# tools' output kept in a log and shown whole only when a step fails.
# Sourced, not run: `. scripts/lib/setup.sh` from the repository root.

VENV=${EVENTIX_VENV:-.venv}

step() {
    printf '== %s\n' "$*" >&2
}

# Run a command with its output in a log; on failure print the whole log and fail.
quiet() {
    local log status
    log="$(mktemp "${TMPDIR:-/tmp}/eventix-setup.XXXXXX")"
    if "$@" >"$log" 2>&1; then
        rm -f "$log"
        return 0
    else
        status=$?
    fi
    printf 'failed (exit %s): %s\n' "$status" "$*" >&2
    cat "$log" >&2
    rm -f "$log"
    return "$status"
}

# Create $VENV and install the package with an extra, unless that install is
# already there for this pyproject.toml.
ensure_venv() { # <extra>
    local extra="$1" stamp want
    if [ ! -x "$VENV/bin/python" ]; then
        step "creating $VENV"
        quiet python3 -m venv "$VENV"
    fi
    stamp="$VENV/.eventix-installed-$extra"
    want="$(sha256sum pyproject.toml | cut -c1-16)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        step "installing eventix-operator[$extra] into $VENV (pip, about a minute the first time)"
        quiet "$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade pip
        quiet "$VENV/bin/python" -m pip install --disable-pip-version-check -e ".[$extra]"
        printf '%s\n' "$want" >"$stamp"
    fi
}
