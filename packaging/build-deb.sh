#!/usr/bin/env bash
# Build a self-contained Debian package of secretd:
#   /opt/secretd           a virtualenv with secretd, secretd-client and aiobotocore
#   /usr/bin/secretd       -> /opt/secretd/bin/secretd
#   /lib/systemd/system    secretd.service, secretd.socket, secretd-credentials.socket
#   /usr/lib/sysusers.d, /usr/lib/tmpfiles.d, /etc/secretd/secretd.toml (a conffile)
# Usage: packaging/build-deb.sh [OUTDIR]   (prints the path of the .deb)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$top/dist}
python=${PYTHON:-/usr/bin/python3}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$top/agent/pyproject.toml" | head -n1)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

venv="$stage/opt/secretd"
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --no-compile --disable-pip-version-check \
    "$top/sdk" "$top/agent[aws]"
"$venv/bin/pip" uninstall --quiet --yes pip setuptools >/dev/null 2>&1 || true
# The venv was built in the staging dir: point its scripts at the installed path.
grep -rlI --null "$venv" "$venv/bin" | xargs -0 -r sed -i "s#$venv#/opt/secretd#g"
find "$venv" -name __pycache__ -prune -exec rm -rf {} +

install -d "$stage/usr/bin" "$stage/lib/systemd/system" "$stage/usr/lib/sysusers.d" \
    "$stage/usr/lib/tmpfiles.d" "$stage/etc/secretd" "$stage/usr/share/doc/secretd" "$stage/DEBIAN"
ln -s /opt/secretd/bin/secretd "$stage/usr/bin/secretd"
install -m 0644 "$top"/packaging/systemd/*.service "$top"/packaging/systemd/*.socket \
    "$stage/lib/systemd/system/"
install -m 0644 "$top/packaging/sysusers.d-secretd.conf" "$stage/usr/lib/sysusers.d/secretd.conf"
install -m 0644 "$top/packaging/tmpfiles.d-secretd.conf" "$stage/usr/lib/tmpfiles.d/secretd.conf"
install -m 0644 "$top/packaging/secretd.toml.example" "$stage/etc/secretd/secretd.toml"
install -m 0644 "$top/README.md" "$stage/usr/share/doc/secretd/README.md"
install -m 0755 "$top"/packaging/debian/{postinst,prerm,postrm} "$stage/DEBIAN/"
echo /etc/secretd/secretd.toml > "$stage/DEBIAN/conffiles"
pyver=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
cat > "$stage/DEBIAN/control" <<CONTROL
Package: secretd
Version: $version
Architecture: $arch
Maintainer: secretd maintainers <secretd@localhost>
Depends: python$pyver, systemd | systemd-standalone-sysusers
Section: admin
Priority: optional
Description: per-host secrets agent
 Fetches secrets from an encrypted file store, Vault/OpenBao or AWS Secrets
 Manager and serves them to local programs over a Unix socket, rendered files
 and systemd credentials.
CONTROL
mkdir -p "$out"
deb="$out/secretd_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$stage" "$deb" >/dev/null
echo "$deb"
