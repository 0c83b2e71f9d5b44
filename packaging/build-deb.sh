#!/usr/bin/env bash
# Build a self-contained Debian package of secretd:
#   /opt/secretd           a virtualenv (Debian's python3.11) with secretd, secretd-client
#                          and aiobotocore, byte-compiled for /opt/secretd
#   /usr/bin/secretd       -> /opt/secretd/bin/secretd
#   /lib/systemd/system    secretd.service, secretd.socket, secretd-credentials.socket
#   /usr/lib/sysusers.d, /usr/lib/tmpfiles.d, /etc/secretd/secretd.toml (a conffile)
#   /usr/share/doc/secretd README.md, docs/*.md, docs/reference/*.md, sdk/README.md
#   /usr/share/bash-completion/completions/secretd, /usr/share/zsh/vendor-completions/_secretd
# Usage: packaging/build-deb.sh [OUTDIR]   (prints the path of the .deb)
# Needs: python3-venv, dpkg-deb, and pip access to PyPI (or a local index/wheelhouse).
# PYTHON=/usr/bin/python3.X picks another Debian interpreter (Depends follows it).
# DEB_COMPRESSION=gzip builds faster (11 s instead of 27 s here) and ~20% bigger than xz.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$top/dist}
# The versioned interpreter (/usr/bin/python3.11), so the venv does not silently
# switch Python when Debian's default python3 moves on.
python=$(readlink -f "${PYTHON:-/usr/bin/python3}")
pyver=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$top/agent/pyproject.toml" | head -n1)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
src=$(mktemp -d)
trap 'rm -rf "$stage" "$src"' EXIT
chmod 0755 "$stage"

# Build from a clean copy: an in-tree build would leave build/ and egg-info in
# the work tree (and race with anyone else building there).
for dist in agent sdk; do
    tar -C "$top" --exclude=build --exclude='*.egg-info' --exclude=__pycache__ \
        -cf - "$dist" | tar -C "$src" -xf -
done

dest=/opt/secretd
venv="$stage$dest"
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --no-compile --disable-pip-version-check \
    -c "$top/constraints.txt" "$src/sdk" "$src/agent[aws,postgresql]"
"$venv/bin/pip" uninstall --quiet --yes pip setuptools >/dev/null 2>&1 || true
rm -f "$venv"/bin/activate* "$venv"/bin/Activate.ps1 "$venv"/bin/pip*
# The venv was built in the staging dir: point its scripts and pyvenv.cfg at
# the installed path (shebangs would otherwise name a deleted temp dir).
grep -rlI --null "$venv" "$venv/bin" "$venv/pyvenv.cfg" | xargs -0 -r sed -i "s#$venv#$dest#g"
if grep -rlI "$stage" "$venv/bin" "$venv/pyvenv.cfg"; then
    echo "build-deb: staging path left in the files above" >&2
    exit 1
fi
# Byte-compile now, recording /opt/secretd paths: the service runs with
# ProtectSystem=strict and could never write __pycache__ itself, so without
# this every start would compile botocore, pydantic and aiohttp from source.
find "$venv" -name __pycache__ -prune -exec rm -rf {} +
"$venv/bin/python" -m compileall -q -j 0 -s "$stage" -p / "$venv/lib" >/dev/null

doc=$stage/usr/share/doc/secretd
install -d "$stage/usr/bin" "$stage/lib/systemd/system" "$stage/usr/lib/sysusers.d" \
    "$stage/usr/lib/tmpfiles.d" "$stage/etc/secretd" "$doc/docs/reference" "$doc/sdk" \
    "$stage/usr/share/bash-completion/completions" "$stage/usr/share/zsh/vendor-completions" \
    "$stage/DEBIAN"
ln -s "$dest/bin/secretd" "$stage/usr/bin/secretd"
install -m 0644 "$top"/packaging/systemd/*.service "$top"/packaging/systemd/*.socket \
    "$stage/lib/systemd/system/"
install -m 0644 "$top/packaging/sysusers.d-secretd.conf" "$stage/usr/lib/sysusers.d/secretd.conf"
install -m 0644 "$top/packaging/tmpfiles.d-secretd.conf" "$stage/usr/lib/tmpfiles.d/secretd.conf"
install -m 0644 "$top/packaging/secretd.toml.example" "$stage/etc/secretd/secretd.toml"
# The same layout as the source tree, so the documents' relative links work.
install -m 0644 "$top/README.md" "$doc/README.md"
install -m 0644 "$top"/docs/*.md "$doc/docs/"
install -m 0644 "$top"/docs/reference/*.md "$doc/docs/reference/"
install -m 0644 "$top/sdk/README.md" "$doc/sdk/README.md"
# Completion scripts, generated from the installed CLI's own parser.
"$venv/bin/python" -B -m secretd.cli.main completion bash \
    > "$stage/usr/share/bash-completion/completions/secretd"
"$venv/bin/python" -B -m secretd.cli.main completion zsh > "$stage/usr/share/zsh/vendor-completions/_secretd"
chmod 0644 "$stage/usr/share/bash-completion/completions/secretd" \
    "$stage/usr/share/zsh/vendor-completions/_secretd"
install -m 0755 "$top"/packaging/debian/{postinst,prerm,postrm} "$stage/DEBIAN/"
echo /etc/secretd/secretd.toml > "$stage/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: secretd
Version: $version
Architecture: $arch
Maintainer: secretd maintainers <secretd@localhost>
Installed-Size: $size
Depends: python$pyver, systemd | systemd-standalone-sysusers, systemd | systemd-standalone-tmpfiles
Section: admin
Priority: optional
Description: per-host secrets agent
 Fetches secrets from an encrypted file store, Vault/OpenBao or AWS Secrets
 Manager and serves them to local programs over a Unix socket, rendered files
 and systemd credentials (LoadCredential=).
CONTROL
mkdir -p "$out"
deb="$out/secretd_${version}_${arch}.deb"
dpkg-deb --root-owner-group "-Z${DEB_COMPRESSION:-xz}" --build "$stage" "$deb" >/dev/null
echo "$deb"
