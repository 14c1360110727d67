#!/bin/sh
# deps.sh PKG-CONFIG-NAME:DEBIAN-PACKAGE ... -- make sure build dependencies are installed.
#
# Checks each library with pkg-config. Missing ones are installed with apt-get when we run
# as root (a fresh machine or CI); otherwise prints the exact command to run and fails.
set -u
missing=""
command -v pkg-config >/dev/null 2>&1 || missing="pkg-config"
for spec in "$@"; do
    pc=${spec%%:*}
    deb=${spec#*:}
    if ! command -v pkg-config >/dev/null 2>&1 || ! pkg-config --exists "$pc"; then
        missing="$missing $deb"
    fi
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "deps: installing$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    # apt-get install needs package lists; a fresh machine may have none.
    if ! apt-get install -y --no-install-recommends $missing >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y --no-install-recommends $missing >/dev/null ||
            { echo "deps: apt-get install$missing failed" >&2; exit 1; }
    fi
    exit 0
fi
echo "deps: missing build dependencies. Install them with:" >&2
echo "    sudo apt-get install$missing" >&2
exit 1
