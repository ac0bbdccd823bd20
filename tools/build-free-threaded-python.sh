#!/usr/bin/env bash
# Builds a free-threaded CPython 3.13 (PEP 703, --disable-gil) into DEST (default: .pythons in the repository):
#   DEST/3.13t/bin/python3.13t
# With --tsan, the same source built with ThreadSanitizer (--with-thread-sanitizer) instead, about 3 minutes on
# 2 cores (measured 2026-12-04: configure 27 s, make -j2 158 s, make install 3 s). It has only what tools/tsan.py
# needs: no test modules (--disable-test-modules: no Lib/test, no _testcapi), and make install does not
# byte-compile the standard library three times with the TSan-instrumented interpreter (PYTHON_FOR_BUILD=true
# turns its compileall steps into no-ops; the interpreter writes each module's .pyc when it first imports it).
# With the test modules and the byte-compiling it took 11 minutes. It makes:
#   DEST/3.13t-tsan/bin/python3.13t              (used by tools/tsan.py; CPython's suppressions file is kept
#                                                 as DEST/3.13t-tsan/suppressions_free_threading.txt)
# No free-threaded interpreter is packaged anywhere this machine reaches, so it is built from the source of
# Debian forky's python3.13 package (the upstream tarball, not Debian's patches), with the system gcc and
# the -dev libraries of the image: about 2.5 minutes on 2 cores. Uses a private apt state under DEST/.apt-src.
# Idempotent: with the interpreter in place it only checks and returns.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
dest=$(realpath -m "${1:-$here/.pythons}")
name=3.13t configure_extra=() install_extra=()
[ "${2:-}" = --tsan ] && name=3.13t-tsan configure_extra=(--with-thread-sanitizer --disable-test-modules) \
    install_extra=(PYTHON_FOR_BUILD=true)
prefix=$dest/$name
python=$prefix/bin/python3.13t

works() {
    [ -x "$python" ] && [ "$("$python" -c 'import sys; print(sys._is_gil_enabled())' 2>/dev/null)" = False ] \
        && { [ "$name" = 3.13t ] || [ -e "$prefix/suppressions_free_threading.txt" ]; }
}
if works; then
    echo "build-free-threaded-python: $python already built"
    exit 0
fi

apt_dir=$dest/.apt-src
mkdir -p "$apt_dir/lists/partial" "$apt_dir/src"
echo "deb-src http://deb.debian.org/debian forky main" >"$apt_dir/sources.list"
apt_opts=(-o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$apt_dir/lists"
          -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
echo "build-free-threaded-python: downloading the source of Debian forky's python3.13"
apt-get "${apt_opts[@]}" -qq update
(cd "$apt_dir/src" && apt-get "${apt_opts[@]}" -qq source --download-only python3.13 >/dev/null)
tarball=$(ls "$apt_dir"/src/python3.13_*.orig.tar.xz | head -n 1)
build=$(mktemp -d /tmp/zthread-cpython-ft.XXXXXX)
trap 'rm -rf "$build"' EXIT
tar -xJf "$tarball" -C "$build" --strip-components=1
echo "build-free-threaded-python: building $(basename "$tarball") with --disable-gil ${configure_extra[*]}"
(cd "$build" && ./configure --disable-gil "${configure_extra[@]}" --prefix="$prefix" --without-ensurepip >"$build/configure.log" 2>&1 \
    && make -j"$(nproc)" >"$build/make.log" 2>&1 && make install "${install_extra[@]}" >"$build/install.log" 2>&1) \
    || { tail -n 40 "$build"/*.log >&2; exit 1; }
[ "$name" = 3.13t ] || cp "$build/Tools/tsan/suppressions_free_threading.txt" "$prefix/"
works || { echo "build-free-threaded-python: $python does not run free-threaded" >&2; exit 1; }
echo "build-free-threaded-python: $python: $("$python" -c 'import sys; print(sys.version.split()[0], "GIL disabled")')"
