# shellcheck shell=bash
# pgvector_build PGINSTALL_DIR CACHE_DIR
#
# Rebuilds pgvector from source against the PostgreSQL in PGINSTALL_DIR (the
# pgserver wheel's pginstall/) and installs it over the bundled vector.so,
# whose AVX-512 build (-march=native) dies with SIGILL on CPUs without AVX-512.
#
# Source: third_party/pgvector (the upstream release as Debian ships it), else
# the same file from deb.debian.org; checked against a pinned sha256.
# pgvector >= 0.8.1 is required for PostgreSQL 18.
#
# Idempotent: a marker next to vector.so records the sha256 of the installed
# build; when it matches, nothing is done. Quiet on success; on failure prints
# the reason (and the build log tail) to stderr and returns non-zero.
# Runs in a subshell, so it does not change the caller's shell options.
pgvector_build() (
    set -u
    local pginstall=${1:?pgvector_build: PGINSTALL_DIR missing} cache=${2:?pgvector_build: CACHE_DIR missing}
    local ver=0.8.2
    local sha=69f4019389af05dc1c9548deb8628e62878e6e207c03907f2b8af2016472cdaa
    local url="http://deb.debian.org/debian/pool/main/p/pgvector/pgvector_${ver}.orig.tar.gz"
    local pgc="$pginstall/bin/pg_config"
    local log="$cache/pgvector-build.log"

    die() { echo "pgvector_build: $*" >&2; [ -s "$log" ] && tail -n 25 "$log" >&2; exit 1; }

    [ -x "$pgc" ] || die "no pg_config at $pgc"
    local libdir sharedir pgver
    libdir=$("$pgc" --pkglibdir) && sharedir=$("$pgc" --sharedir)/extension && pgver=$("$pgc" --version) \
        || die "pg_config failed"
    [ -f "$("$pgc" --pgxs)" ] || die "PGXS makefile missing ($("$pgc" --pgxs))"
    [ -f "$("$pgc" --includedir-server)/postgres.h" ] || die "server headers missing ($("$pgc" --includedir-server))"
    command -v gcc >/dev/null && command -v make >/dev/null || die "gcc and make are required"

    local marker="$libdir/.cairn-pgvector.sha256"
    if [ -f "$marker" ] && [ -f "$libdir/vector.so" ] \
        && [ "$(sha256sum "$libdir/vector.so" | cut -d' ' -f1)" = "$(cat "$marker")" ]; then
        exit 0
    fi

    mkdir -p "$cache" || die "cannot create $cache"
    : > "$log"

    # ---- source: the copy in the repository, else Debian's mirror -------------------
    local tarball="$cache/pgvector_${ver}.orig.tar.gz" srcdir
    local vendored
    vendored="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/third_party/pgvector/pgvector_${ver}.orig.tar.gz"
    if ! { [ -f "$tarball" ] && echo "$sha  $tarball" | sha256sum -c --status; }; then
        rm -f "$tarball"
        if [ -f "$vendored" ]; then
            cp "$vendored" "$tarball.part"
        else
            curl -fsSL --retry 3 -o "$tarball.part" "$url" >>"$log" 2>&1 || true
        fi
        echo "$sha  $tarball.part" | sha256sum -c --status || { rm -f "$tarball.part"; die "no pgvector $ver source with the expected checksum"; }
        mv -f "$tarball.part" "$tarball"
    fi
    rm -rf "$cache/pgvector-$ver"
    tar -xzf "$tarball" -C "$cache" >>"$log" 2>&1 || die "cannot unpack $tarball"
    srcdir="$cache/pgvector-$ver"

    # ---- build ----------------------------------------------------------------
    # The wheel's PostgreSQL was built on manylinux2014 (glibc 2.17) so its
    # pg_config.h defines HAVE_XLOCALE_H; glibc >= 2.26 has no xlocale.h.
    local compat="$cache/compat"
    mkdir -p "$compat"
    printf '#include <locale.h>\n' > "$compat/xlocale.h"
    # OPTFLAGS="" : no -march=native (pgvector dispatches AVX/F16C at runtime).
    make -C "$srcdir" -j"$(nproc 2>/dev/null || echo 2)" PG_CONFIG="$pgc" OPTFLAGS="" \
        PG_CPPFLAGS="-I$compat" >>"$log" 2>&1 || die "make failed for pgvector $ver against $pgver"
    [ -f "$srcdir/vector.so" ] || die "build produced no vector.so"

    # ---- install ----------------------------------------------------------------
    # Keep the original once; replace the .so by rename so running backends that
    # have the old file mapped are not disturbed.
    [ -f "$libdir/vector.so" ] && [ ! -e "$libdir/vector.so.orig" ] && cp -p "$libdir/vector.so" "$libdir/vector.so.orig"
    install -m 755 "$srcdir/vector.so" "$libdir/vector.so.new" && mv -f "$libdir/vector.so.new" "$libdir/vector.so" \
        || die "cannot install vector.so into $libdir"
    # SQL scripts and control file (no-ops when the bundled version is the same).
    cp -f "$srcdir"/sql/vector--*.sql "$sharedir/" && cp -f "$srcdir/vector.control" "$sharedir/vector.control" \
        || die "cannot install SQL/control files into $sharedir"
    sha256sum "$libdir/vector.so" | cut -d' ' -f1 > "$marker" || die "cannot write $marker"
)
