#!/usr/bin/env bash
# Puts Debian bookworm's arm64 CPython 3.11 into DEST (default: .pythons/arm64 in the repository), run by
# qemu-aarch64-static on this x86_64 machine without touching the system's apt state or binfmt_misc:
#   DEST/root                 the unpacked arm64 packages (the sysroot: glibc, libpython, the stdlib)
#   DEST/root/usr/bin/python3 a wrapper: qemu-aarch64-static -L DEST/root, argv[0] kept as the wrapper's
#                             path so sys.executable is the wrapper and subprocesses run under qemu too
#   DEST/root/usr/lib/python3/dist-packages   on sys.path: install arm64 and pure wheels here
# Needs qemu-user-static (apt-get install qemu-user-static). Idempotent.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
dest=$(realpath -m "${1:-$here/.pythons/arm64}")
root=$dest/root
pkgs=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libexpat1 zlib1g libffi8 libssl3 libbz2-1.0
      liblzma5 libsqlite3-0 libuuid1 libgcc-s1 libncursesw6 libtinfo6 libreadline8 libcrypt1 libdb5.3 libnsl2 libtirpc3)

command -v qemu-aarch64-static >/dev/null || { echo "fetch-arm64-python: qemu-aarch64-static not found (apt-get install qemu-user-static)" >&2; exit 1; }
works() { [ -x "$root/usr/bin/python3" ] && "$root/usr/bin/python3" -c "import ctypes, ssl, platform; assert platform.machine() == 'aarch64'" 2>/dev/null; }
if works; then
    echo "fetch-arm64-python: already in $dest"
    exit 0
fi

apt_dir=$dest/.apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$dest/.debs"
echo "deb http://deb.debian.org/debian bookworm main" >"$apt_dir/sources.list"
: >"$apt_dir/status"
apt_opts=(-o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$apt_dir/lists"
          -o "Dir::Cache=$apt_dir/cache" -o "Dir::State::status=$apt_dir/status" -o Debug::NoLocking=1
          -o APT::Architecture=arm64 -o APT::Architectures::=arm64 -o APT::Sandbox::User=root)
echo "fetch-arm64-python: reading Debian bookworm's arm64 package lists"
apt-get "${apt_opts[@]}" -qq update
(cd "$dest/.debs" && apt-get "${apt_opts[@]}" -qq download "${pkgs[@]}")
rm -rf "$root"
mkdir -p "$root"
for p in "${pkgs[@]}"; do
    deb=$( (ls -t "$dest/.debs/${p}_"*_arm64.deb "$dest/.debs/${p}_"*_all.deb 2>/dev/null || true) | head -n 1)
    [ -n "$deb" ] || { echo "fetch-arm64-python: no .deb for $p" >&2; exit 1; }
    dpkg -x "$deb" "$root"
done
mkdir -p "$root/usr/lib/python3/dist-packages"
cat >"$root/usr/bin/python3" <<WRAPPER
#!/bin/sh
exec qemu-aarch64-static -L "$root" -0 "\$0" "$root/usr/bin/python3.11" "\$@"
WRAPPER
chmod +x "$root/usr/bin/python3"
works || { echo "fetch-arm64-python: the arm64 CPython does not run under qemu" >&2; exit 1; }
echo "fetch-arm64-python: $root/usr/bin/python3: $("$root/usr/bin/python3" -c 'import sys, platform; print(sys.version.split()[0], platform.machine())')"
