#!/bin/sh
# lib_check.sh BUILD [SAN] -- the shared library as a distribution ships it (make check).
#
#   - BUILD/libmaskloss.so.MAJOR.MINOR.PATCH is a file, .so.MAJOR and .so link to it, and its
#     SONAME is libmaskloss.so.MAJOR (the numbers from maskloss.h's ML_VERSION_*);
#   - it exports exactly the functions maskloss.h declares, all ml_*, no ml__* internal and
#     nothing else (nm -D), and every function the header names, comments included, is one;
#   - `make install DESTDIR=tmp PREFIX=/usr LIBDIR=/usr/lib/<multiarch>` lays out the tree a
#     package would, maskloss.pc gives that libdir and includedir, and a program compiled with
#     `pkg-config --cflags --libs maskloss` against it links (shared, and static), runs the
#     note's example and prints ml_version();
#   - examples/masked-mean.c builds the same way against that tree and prints the note's figures.
# SAN is the build's -fsanitize list, given to the test program too. Environment: CC, MAKE.
set -u
build=${1:?usage: lib_check.sh BUILD [SAN]}
san=${2:-}
CC=${CC:-cc}
MAKE=${MAKE:-make}
PKG_CONFIG=${PKG_CONFIG:-pkg-config}
header=lib/include/maskloss.h
fail=0
note() { echo "lib_check: FAIL: $*" >&2; fail=1; }
echo "== tests/lib_check.sh $build"

part() { sed -n "s/^#define ML_VERSION_$1 \([0-9][0-9]*\)\$/\1/p" $header; }
major=$(part MAJOR)
version=$major.$(part MINOR).$(part PATCH)
so=$build/libmaskloss.so.$version
soname=libmaskloss.so.$major

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lib_check.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

# ---- The shared object in the build tree
if [ ! -f "$so" ] || [ -L "$so" ]; then
    note "$so is not a regular file"
    exit 1
fi
for link in "$build/$soname" "$build/libmaskloss.so"; do
    [ -L "$link" ] && [ "$(readlink "$link")" = "libmaskloss.so.$version" ] ||
        note "$link is not a symbolic link to libmaskloss.so.$version"
done
got=$(readelf -d "$so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$got" = "$soname" ] || note "$so has SONAME '$got', not $soname"

# Exported symbols, without their version (ml_eval@@MASKLOSS_0), and the version nodes ("A").
nm -D --defined-only "$so" | awk '$2 != "A" {sub(/@.*/, "", $3); print $3}' | sort -u \
    >"$tmp/exported"
nm -D --defined-only "$so" | awk '$2 == "A" {print $3}' | grep -v '^MASKLOSS_' |
    sed 's/^/absolute symbol /' >"$tmp/bad_exports"
grep -v '^ml_[a-z0-9][a-z0-9_]*$' "$tmp/exported" >>"$tmp/bad_exports"
[ -s "$tmp/bad_exports" ] &&
    note "$so exports what is not a public ml_* function: $(tr '\n' ' ' <"$tmp/bad_exports")"
[ -s "$tmp/exported" ] || note "$so exports nothing"

# The functions maskloss.h declares (the preprocessed header: no comments) and those it names
# anywhere, comments included ("see ml_loss_find()").
names() { grep -oE '(^|[^A-Za-z0-9_])ml_[a-z0-9_]*[[:space:]]*\(' | sed 's/^[^m]*//; s/[[:space:](]*$//' | sort -u; }
$CC -E -P -Ilib/include $header | names >"$tmp/declared"
names <$header >"$tmp/named"
[ -s "$tmp/declared" ] || note "no function declaration found in $header"
missing=$(comm -23 "$tmp/declared" "$tmp/exported" | tr '\n' ' ')
[ -z "$missing" ] || note "$header declares functions $so does not export (no ML_API?): $missing"
extra=$(comm -13 "$tmp/declared" "$tmp/exported" | tr '\n' ' ')
[ -z "$extra" ] || note "$so exports functions $header does not declare: $extra"
undeclared=$(comm -23 "$tmp/named" "$tmp/declared" | tr '\n' ' ')
[ -z "$undeclared" ] || note "$header names functions it does not declare: $undeclared"

# ---- The installed tree
multiarch=$($CC -dumpmachine)
libdir=/usr/lib/$multiarch
root=$tmp/root
if ! $MAKE --no-print-directory BUILD="$build" SAN="$san" install DESTDIR="$root" PREFIX=/usr \
    LIBDIR="$libdir" >"$tmp/install.log" 2>&1; then
    cat "$tmp/install.log" >&2
    note "make install DESTDIR=$root PREFIX=/usr LIBDIR=$libdir failed"
    exit 1
fi
lib=$root$libdir
[ -f "$lib/libmaskloss.so.$version" ] && [ ! -L "$lib/libmaskloss.so.$version" ] ||
    note "install: $libdir/libmaskloss.so.$version is not a regular file"
for link in "$lib/$soname" "$lib/libmaskloss.so"; do
    [ -L "$link" ] && [ "$(readlink "$link")" = "libmaskloss.so.$version" ] ||
        note "install: $link is not a symbolic link to libmaskloss.so.$version"
done
for f in $libdir/libmaskloss.a $libdir/pkgconfig/maskloss.pc /usr/include/maskloss.h \
    /usr/bin/maskloss /usr/bin/maskloss-server; do
    [ -f "$root$f" ] || note "install: no $f"
done
[ -e "$root/usr/lib/libmaskloss.a" ] && note "install: LIBDIR=$libdir ignored (/usr/lib/libmaskloss.a)"

# maskloss.pc, read as a packager's pkg-config would (its own directory only).
pc() { PKG_CONFIG_LIBDIR=$lib/pkgconfig "$PKG_CONFIG" "$@" maskloss; }
[ "$(pc --modversion)" = "$version" ] || note "maskloss.pc: Version '$(pc --modversion)', not $version"
[ "$(pc --variable=libdir)" = "$libdir" ] || note "maskloss.pc: libdir '$(pc --variable=libdir)', not $libdir"
[ "$(pc --variable=includedir)" = /usr/include ] ||
    note "maskloss.pc: includedir '$(pc --variable=includedir)', not /usr/include"
flags=$(PKG_CONFIG_SYSROOT_DIR=$root pc --cflags --libs) || note "pkg-config --cflags --libs maskloss failed"

# A program using the installed header and library: every function the header declares (the link
# fails if one is missing), the version, and the note's masked example of README.md (float64
# sigmoid cross-entropy, SUM_BY_NONZERO_WEIGHTS over a 4x5 mask). Its exact value, with mpmath
# at 50 digits: 0.53753211355555677679...; the bound is 4 ulp.
{
    echo '#include <math.h>'
    echo '#include <stdio.h>'
    echo '#include <string.h>'
    echo '#include <maskloss.h>'
    echo 'static void (*const named[])(void) = {'
    sed 's/.*/    (void (*)(void))&,/' "$tmp/declared"
    echo '};'
    cat <<'EOF'
int main(void)
{
    char numbers[32];
    snprintf(numbers, sizeof(numbers), "%d.%d.%d", ML_VERSION_MAJOR, ML_VERSION_MINOR,
             ML_VERSION_PATCH);
    if (strcmp(ML_VERSION, numbers) != 0 || strcmp(ml_version(), ML_VERSION) != 0) {
        fprintf(stderr, "ML_VERSION %s, numbers %s, ml_version() %s\n", ML_VERSION, numbers,
                ml_version());
        return 1;
    }
    for (size_t i = 0; i < sizeof(named) / sizeof(named[0]); i++)
        if (!named[i])
            return 1;
    static const double labels[4][5] = {
        {1, 1, 0, 0, 0}, {0, 1, 1, 1, 0}, {0, 0, 0, 0, 1}, {1, 1, 1, 1, 1}};
    static const double logits[4][5] = {{0.2, 0.2, 0.2, 0, 0.8},
                                        {0, 0.5, 0.5, 0.2, 0},
                                        {0, 0.5, 0.1, 0.0, 0.9},
                                        {0.9, 0.9, 0.7, 0.1, 0.0}};
    static const double mask[4][5] = {
        {1, 0, 0, 0, 0}, {0, 0, 1, 1, 0}, {0, 0, 1, 0, 1}, {0, 1, 1, 1, 1}};
    struct ml_tensor tl = {2, {4, 5}, ML_FLOAT64, labels};
    struct ml_tensor tx = {2, {4, 5}, ML_FLOAT64, logits};
    struct ml_tensor tm = {2, {4, 5}, ML_FLOAT64, mask};
    struct ml_request req;
    ml_request_init(&req);
    req.loss = "tf.compat.v1.losses.sigmoid_cross_entropy";
    req.dtype = ML_FLOAT64;
    req.labels = &tl;
    req.logits = &tx;
    req.weights = &tm;
    struct ml_result res;
    struct ml_error err;
    if (ml_eval(&req, &res, &err) != 0) {
        fprintf(stderr, "ml_eval: %s: %s\n", err.field, err.message);
        return 1;
    }
    const double exact = 0.53753211355555677679;
    printf("ml_version() %s, loss %.17g\n", ml_version(), res.loss);
    int ok = fabs(res.loss - exact) <= 4 * 0x1p-53; /* 4 ulp in [0.5, 1) */
    ml_result_free(&res);
    return ok ? 0 : 1;
}
EOF
} >"$tmp/prog.c"
sanflags=${san:+-fsanitize=$san -fno-omit-frame-pointer -fno-sanitize-recover=all}
cflags="-std=c11 -Wall -Wextra -Werror $sanflags"
# shellcheck disable=SC2086 # word splitting of the flags is meant
if $CC $cflags -o "$tmp/prog" "$tmp/prog.c" $flags -lm 2>"$tmp/cc.log"; then
    needed=$(readelf -d "$tmp/prog" | sed -n 's/.*(NEEDED).*\[\(libmaskloss.*\)\]/\1/p')
    [ "$needed" = "$soname" ] || note "the program needs '$needed', not $soname"
    loaded=$(LD_LIBRARY_PATH=$lib ldd "$tmp/prog" | awk -v n="$soname" '$1 == n {print $3}')
    [ "$loaded" = "$lib/$soname" ] || note "the program loads '$loaded', not $lib/$soname"
    out=$(LD_LIBRARY_PATH=$lib "$tmp/prog") || note "the program against $libdir/$soname failed"
    echo "lib_check: shared: $out"
    case $out in
    "ml_version() $version, "*) ;;
    *) note "ml_version() of the installed library is not $version" ;;
    esac
else
    cat "$tmp/cc.log" >&2
    note "a program using maskloss.h does not build with pkg-config --cflags --libs maskloss"
fi
# shellcheck disable=SC2046,SC2086 # the flags are meant to split
if $CC $cflags -o "$tmp/prog_static" "$tmp/prog.c" $(PKG_CONFIG_SYSROOT_DIR=$root pc --cflags) \
    "$lib/libmaskloss.a" -lm 2>"$tmp/cc.log"; then
    out=$("$tmp/prog_static") || note "the program linked with $libdir/libmaskloss.a failed"
    echo "lib_check: static: $out"
else
    cat "$tmp/cc.log" >&2
    note "a program using maskloss.h does not link with $libdir/libmaskloss.a"
fi

# examples/masked-mean.c as its comment says a user builds it (pkg-config against the installed
# tree) and runs it: the note's loss within 4 ulp of the exact value above, its 9 non-zero
# weights, and the first row's loss, its one weighted element: log(1 + e^-0.2) (awk's libm).
# shellcheck disable=SC2086 # word splitting of the flags is meant
if $CC $cflags -o "$tmp/masked-mean" examples/masked-mean.c $flags -lm 2>"$tmp/cc.log"; then
    if out=$(LD_LIBRARY_PATH=$lib "$tmp/masked-mean"); then
        echo "$out" | sed 's/^/lib_check: examples\/masked-mean: /'
        echo "$out" | awk '
            function near(got, want, tol) { d = got - want; return (d < 0 ? -d : d) <= tol }
            $1 == "loss" { loss = near($2, 0.53753211355555677679, 4 * 2 ^ -53) }
            $1 == "num_nonzero_weights" { nnz = ($2 == 9) }
            $1 == "per_sample" && !rows++ { row0 = near($2, log(1 + exp(-0.2)), 1e-15) }
            END { exit !(loss && nnz && row0 && rows == 4) }' ||
            note "examples/masked-mean printed figures other than the note's example"
    else
        note "examples/masked-mean against $libdir/$soname failed"
    fi
else
    cat "$tmp/cc.log" >&2
    note "examples/masked-mean.c does not build with pkg-config --cflags --libs maskloss"
fi

[ $fail = 0 ] && echo "lib_check: $so (soname $soname, $(wc -l <"$tmp/exported") ml_* exports) and its installed tree are fine"
exit $fail
