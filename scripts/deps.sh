#!/bin/sh
# deps.sh SPEC ... -- make sure build and test dependencies are installed.
#
# Each SPEC names how to check for a dependency and the Debian package that provides it:
#   PKG-CONFIG-NAME:DEBIAN-PACKAGE     a library, checked with pkg-config
#   py:MODULE:DEBIAN-PACKAGE           a module of Debian's /usr/bin/python3
#   cmd:COMMAND:DEBIAN-PACKAGE         a program on the PATH
# Missing ones are installed with apt-get when we run as root (a fresh machine or CI);
# otherwise prints the exact command to run and fails.
set -u
missing=""
need_pc=""
for spec in "$@"; do
    case $spec in
    py:*)
        rest=${spec#py:}
        mod=${rest%%:*}
        deb=${rest#*:}
        /usr/bin/python3 -c "import $mod" >/dev/null 2>&1 || missing="$missing $deb"
        ;;
    cmd:*)
        rest=${spec#cmd:}
        cmd=${rest%%:*}
        deb=${rest#*:}
        command -v "$cmd" >/dev/null 2>&1 || missing="$missing $deb"
        ;;
    *)
        need_pc=1
        pc=${spec%%:*}
        deb=${spec#*:}
        if ! command -v pkg-config >/dev/null 2>&1 || ! pkg-config --exists "$pc"; then
            missing="$missing $deb"
        fi
        ;;
    esac
done
if [ -n "$need_pc" ] && ! command -v pkg-config >/dev/null 2>&1; then
    missing="pkg-config$missing"
fi
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
echo "deps: missing dependencies. Install them with:" >&2
echo "    sudo apt-get install$missing" >&2
exit 1
