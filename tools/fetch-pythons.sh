#!/usr/bin/env bash
# Puts CPython 3.14 and 3.15 from Debian's sid packages into DEST (default: .pythons in the repository),
# runnable on this Debian 12 machine without installing anything into the system but patchelf:
#   DEST/3.14/bin/python3.14, DEST/3.15/bin/python3.15   (venv + pip work; the test suites and C headers
#                                                         are included)
# With --debug, also CPython 3.14's debug build (Py_DEBUG: sys.gettotalrefcount, assertions), no venv:
#   DEST/3.14d/bin/python3.14d                            (used by tools/refcount-debug.py)
# Without it, also the free-threaded CPython 3.13t, built from Debian's source package (nothing packages one):
#   DEST/3.13t/bin/python3.13t                            (tools/build-free-threaded-python.sh; ~2.5 minutes)
# Uses a private apt state under DEST/.apt (never /var/lib/apt or /etc/apt) and keeps the .debs in
# DEST/.debs. Idempotent: with everything in place it only checks and returns.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
dest=$(realpath -m "${1:-$here/.pythons}")
versions=(3.14 3.15)
[ "${2:-}" = --debug ] && versions+=(3.14d)
arch=amd64
libs=(libc6 libexpat1 zlib1g libffi8 libssl3t64 libbz2-1.0 liblzma5 libzstd1 libmpdec4 libsqlite3-0 libuuid1
      libgcc-s1 gcc-16-base libncursesw6 libtinfo6 libreadline8t64 python3-pip-whl python3-setuptools-whl)

works() {
    local mods="ssl, sqlite3, ctypes" headers="$dest/$1/bin/python$1"
    # The debug build has no venv of its own (Debian's python3.14-venv), and no headers here.
    [ "${1%d}" = "$1" ] && mods+=", venv" && headers="$dest/$1/root/usr/include/python$1/Python.h"
    [ -x "$dest/$1/bin/python$1" ] && [ -e "$headers" ] && "$dest/$1/bin/python$1" -c "import $mods" 2>/dev/null
}

[ "${2:-}" = --debug ] || bash "$here/tools/build-free-threaded-python.sh" "$dest"

missing=()
for v in "${versions[@]}"; do works "$v" || missing+=("$v"); done
if [ ${#missing[@]} -eq 0 ]; then
    echo "fetch-pythons: ${versions[*]} already in $dest"
    exit 0
fi

if ! command -v patchelf >/dev/null; then
    echo "fetch-pythons: installing patchelf"
    (apt-get install -y -qq patchelf >/dev/null 2>&1) || { apt-get update -qq && apt-get install -y -qq patchelf >/dev/null; }
fi

apt_dir=$dest/.apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$dest/.debs"
echo "deb http://deb.debian.org/debian sid main" >"$apt_dir/sources.list"
: >"$apt_dir/status"
apt_opts=(-o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$apt_dir/lists"
          -o "Dir::Cache=$apt_dir/cache" -o "Dir::State::status=$apt_dir/status" -o Debug::NoLocking=1
          -o "APT::Architecture=$arch" -o "APT::Architectures::=$arch" -o APT::Sandbox::User=root)
echo "fetch-pythons: reading Debian sid's package lists"
apt-get "${apt_opts[@]}" -qq update

for v in "${missing[@]}"; do
    root=$dest/$v/root
    if [ "${v%d}" != "$v" ]; then  # the debug build: its interpreter and extension modules, the same stdlib
        base=${v%d}
        pkgs=("python$base-dbg" "libpython$base-dbg" "libpython$base-minimal" "libpython$base-stdlib" "${libs[@]}")
    else
        base=$v
        pkgs=("python$v-minimal" "libpython$v-minimal" "libpython$v-stdlib" "libpython$v-testsuite" "python$v-venv"
              "libpython$v-dev" "${libs[@]}")
    fi
    echo "fetch-pythons: downloading CPython $v ($(apt-cache "${apt_opts[@]}" policy "python$base-minimal" | awk '/Candidate/ {print $2}')) and its libraries"
    (cd "$dest/.debs" && apt-get "${apt_opts[@]}" -qq download "${pkgs[@]}")
    rm -rf "$root"
    mkdir -p "$root" "$dest/$v/bin"
    for p in "${pkgs[@]}"; do
        deb=$( (ls -t "$dest/.debs/${p}_"*"_${arch}.deb" "$dest/.debs/${p}_"*_all.deb 2>/dev/null || true) | head -n 1)
        [ -n "$deb" ] || { echo "fetch-pythons: no .deb for $p" >&2; exit 1; }
        dpkg -x "$deb" "$root"
    done
    # The interpreter uses sid's glibc and libraries (DT_RPATH, so extension modules find them too).
    patchelf --set-interpreter "$root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --force-rpath \
        --set-rpath "$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu" "$root/usr/bin/python$v"
    # ensurepip (venv) looks for Debian's wheels in WHEEL_PKG_DIR: point it at our copy.
    sed -i "s|'/usr/share/python-wheels/\?'|'$root/usr/share/python-wheels/'|" "$root"/usr/lib/python$base/_sysconfigdata_*.py
    ln -sfn "$root/usr/bin/python$v" "$dest/$v/bin/python$v"
    works "$v" || { echo "fetch-pythons: CPython $v does not run" >&2; exit 1; }
    echo "fetch-pythons: $dest/$v/bin/python$v: $("$dest/$v/bin/python$v" -c 'import sys; print(sys.version.split()[0])')"
done
