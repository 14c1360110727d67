#!/bin/sh
# docker_check.sh SERVER -- keeps docker/Dockerfile in step with the build, without a Docker
# engine: every directory the build needs is copied into the build stage, the build stage
# installs the Makefile's build packages, and the runtime stage installs exactly the Debian
# packages that provide the shared libraries SERVER links.
set -u
server=$1
df=docker/Dockerfile
fail=0
note() { echo "docker_check: $*" >&2; fail=1; }

# Sources: every top-level directory holding files the Makefile compiles.
for dir in lib proto cli server scripts; do
    grep -q "^COPY $dir $dir\$" $df || note "$df does not copy $dir/ into the build stage"
done
# Makefiles the Makefile includes: make does not parse without them.
for mk in $(sed -n 's/^-\{0,1\}include \([^$]*\)$/\1/p' Makefile); do
    grep -q "^COPY $mk " $df || note "$df does not copy $mk (the Makefile includes it) into the build stage"
done
# Build packages: the Makefile's DEPS_BUILD Debian names (its continuation lines too).
for deb in $(awk '/^DEPS_BUILD = /{f=1} f{print; if (!/\\$/) exit}' Makefile |
             sed 's/^DEPS_BUILD = //; s/\\$//' | tr ' ' '\n' | sed 's/.*://'); do
    grep -q "$deb" $df || note "$df build stage does not install $deb (Makefile DEPS_BUILD)"
done
# Runtime packages: the owners of the libraries SERVER links directly (its NEEDED entries;
# theirs come with them), other than libc's own and the sanitizer runtimes.
runtime=$(sed -n '/^FROM debian:bookworm-slim$/,$p' $df | grep -o 'install -y --no-install-recommends [^\\]*' |
          sed 's/install -y --no-install-recommends //')
for needed in $(readelf -d "$server" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    case $needed in
    libasan* | libubsan* | libtsan*) continue ;;
    ld-linux* | ld64.so*) continue ;; # the dynamic loader (libc6; thread-local storage needs it)
    esac
    lib=$(ldd "$server" | awk -v n="$needed" '$1 == n {print $3}')
    [ -n "$lib" ] || { note "$server needs $needed, which ldd cannot resolve"; continue; }
    real=$(readlink -f "$lib")
    pkg=$(dpkg -S "$real" 2>/dev/null | head -1 | cut -d: -f1)
    case $pkg in
    libc6 | libgcc-s1 | "") continue ;; # in every Debian image (or a sanitizer runtime)
    esac
    case " $runtime " in
    *" $pkg "*) ;;
    *) note "$df runtime stage does not install $pkg (provides $lib)" ;;
    esac
done
[ $fail = 0 ] && echo "docker_check: docker/Dockerfile matches the Makefile and $server's libraries"
exit $fail
