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

# Where programs of Debian packages are unpacked when they cannot be installed
# (not root, no passwordless sudo); tests/support/pgbouncer.py looks here too.
DEBS="${XDG_CACHE_HOME:-$HOME/.cache}/eventix-operator/debs"

# The path of a Debian package's program (named as the package), installed or
# unpacked by ensure_debian_packages; nothing when there is none.
debian_program() { # <package>
    local found
    found="$(command -v "$1" 2>/dev/null)" || found=""
    for found in $found "/usr/sbin/$1" "/usr/bin/$1" "$DEBS/bin/$1"; do
        if [ -x "$found" ]; then
            printf '%s\n' "$found"
            return 0
        fi
    done
    return 1
}

# Whether apt-get can install here: root, or passwordless sudo.
can_install_packages() {
    [ "$(id -u)" -eq 0 ] || { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }
}

# Make the programs of Debian packages available, each named as its package
# (pgbouncer) or after a colon (chromium-driver:chromedriver). As root, or as a
# user with passwordless sudo, apt-get installs them (after `apt-get update` only
# when the install fails without it). Otherwise `apt-get download` fetches them,
# with those of their libraries this machine lacks, and unpacks them under $DEBS;
# $DEBS/bin/<program> runs the program with its libraries found there.
ensure_debian_packages() { # <package[:program]>...
    local spec missing=()
    for spec in "$@"; do
        debian_program "${spec#*:}" >/dev/null || missing+=("${spec%%:*}")
    done
    [ "${#missing[@]}" -gt 0 ] || return 0
    local as_root=()
    if [ "$(id -u)" -eq 0 ]; then
        as_root=(env)
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        as_root=(sudo -n env)
    fi
    if [ "${#as_root[@]}" -gt 0 ]; then
        step "installing ${missing[*]} (Debian packages, apt-get)"
        local install=("${as_root[@]}" DEBIAN_FRONTEND=noninteractive
            apt-get install -y -q --no-install-recommends "${missing[@]}")
        if ! "${install[@]}" >/dev/null 2>&1; then
            quiet "${as_root[@]}" apt-get update -q
            quiet "${install[@]}"
        fi
    else
        step "unpacking ${missing[*]} (Debian packages) into $DEBS (not root, no sudo)"
        for package in "${missing[@]}"; do
            unpack_debian_package "$package"
        done
    fi
}

# apt-get download a package, and each library package it depends on that is not
# installed (recursively), and unpack them all into $DEBS/root; then write
# $DEBS/bin/<package>, which runs /usr/{s,}bin/<package> of it with its libraries.
unpack_debian_package() { # <package>
    local package="$1" queue=("$1") done_list=" " name dep program libs missing
    mkdir -p "$DEBS/archives" "$DEBS/root" "$DEBS/bin"
    while [ "${#queue[@]}" -gt 0 ]; do
        name="${queue[0]}"
        queue=("${queue[@]:1}")
        case "$done_list" in *" $name "*) continue ;; esac
        done_list+="$name "
        rm -f "$DEBS/archives/${name}"_*.deb
        (cd "$DEBS/archives" && quiet apt-get download -q "$name")
        quiet dpkg-deb -x "$DEBS/archives/${name}"_*.deb "$DEBS/root"
        # Its libraries that are not installed here: apt-cache lists a dependency
        # with alternatives as several lines; only lib* packages are fetched.
        for dep in $(apt-cache depends --no-recommends --no-suggests "$name" |
            awk '$1 == "Depends:" || $1 == "|Depends:" { print $2 }' | grep '^lib' || true); do
            dep="${dep%%:*}"
            if ! dpkg-query -W -f='${Status}' "$dep" 2>/dev/null | grep -q 'ok installed'; then
                queue+=("$dep")
            fi
        done
    done
    program=""
    for program in "$DEBS/root/usr/sbin/$package" "$DEBS/root/usr/bin/$package" ""; do
        [ -x "$program" ] && break
    done
    if [ -z "$program" ]; then
        printf 'failed: the Debian package %s has no program /usr/{s,}bin/%s\n' "$package" "$package" >&2
        return 1
    fi
    libs="$(find "$DEBS/root" -maxdepth 3 -type d -name '*-linux-gnu*' | paste -sd: -)"
    missing="$(LD_LIBRARY_PATH="$libs" ldd "$program" | grep 'not found' || true)"
    if [ -n "$missing" ]; then
        printf 'failed: %s still lacks libraries after unpacking its packages:\n%s\n' \
            "$program" "$missing" >&2
        return 1
    fi
    printf '#!/bin/sh\nLD_LIBRARY_PATH="%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "%s" "$@"\n' \
        "$libs" "$program" >"$DEBS/bin/$package"
    chmod 755 "$DEBS/bin/$package"
}
