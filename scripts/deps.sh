#!/bin/sh
# deps.sh [--check] SPEC ... -- make sure build and test dependencies are installed.
#
# Each SPEC names how to check for a dependency and the Debian package that provides it:
#   PKG-CONFIG-NAME:DEBIAN-PACKAGE     a library, checked with pkg-config
#   py:MODULE:DEBIAN-PACKAGE           a module of Debian's /usr/bin/python3
#   cmd:COMMAND:DEBIAN-PACKAGE         a program on the PATH (or in /usr/sbin, /sbin)
# Missing ones are installed with apt-get when we run as root (a fresh machine or CI: make deps,
# run, test, bench); otherwise, and always with --check (make, make install, make check), each
# is named with its Debian package, the apt-get command to run is printed, and we fail.
set -u
check_only=""
if [ "${1:-}" = --check ]; then
    check_only=1
    shift
fi
missing=""
report=""
have_pkg_config=""
command -v "${PKG_CONFIG:-pkg-config}" >/dev/null 2>&1 && have_pkg_config=1
add() { # add DEBIAN-PACKAGE WHAT
    case " $missing " in
    *" $1 "*) ;;
    *) missing="$missing $1" ;;
    esac
    report="$report
    $2 (Debian package $1)"
}
for spec in "$@"; do
    case $spec in
    py:*)
        rest=${spec#py:}
        mod=${rest%%:*}
        deb=${rest#*:}
        /usr/bin/python3 -c "import $mod" >/dev/null 2>&1 ||
            add "$deb" "Python module $mod of /usr/bin/python3"
        ;;
    cmd:*)
        rest=${spec#cmd:}
        cmd=${rest%%:*}
        deb=${rest#*:}
        # (/usr/sbin too: Debian puts nginx there, off an ordinary user's PATH)
        PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 || add "$deb" "command $cmd"
        ;;
    *)
        pc=${spec%%:*}
        deb=${spec#*:}
        if [ -z "$have_pkg_config" ]; then
            case " $missing " in
            *" pkg-config "*) ;;
            *) add pkg-config "command ${PKG_CONFIG:-pkg-config}" ;;
            esac
            add "$deb" "pkg-config module $pc"
        elif ! "${PKG_CONFIG:-pkg-config}" --exists "$pc"; then
            add "$deb" "pkg-config module $pc"
        fi
        ;;
    esac
done
[ -z "$missing" ] && exit 0
if [ -z "$check_only" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "deps: installing$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    # apt-get install needs package lists; a fresh machine may have none.
    if ! apt-get install -y --no-install-recommends $missing >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y --no-install-recommends $missing >/dev/null ||
            { echo "deps: apt-get install$missing failed" >&2; exit 1; }
    fi
    exit 0
fi
echo "deps: missing:$report" >&2
echo "deps: install them with" >&2
echo "    sudo apt-get install$missing" >&2
[ -n "$check_only" ] && echo "deps: (or, as root, make deps; make test installs what it needs)" >&2
exit 1
