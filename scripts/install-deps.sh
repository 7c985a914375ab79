#!/usr/bin/env bash
# Installs the Debian packages forkd needs to build, test and benchmark.
set -euo pipefail
packages=(
	build-essential
	libcmocka-dev
	libxxhash-dev
	libjansson-dev
	liblz4-dev
	libsqlite3-dev
	libcurl4-openssl-dev
	curl
	openssl
	libmicrohttpd-dev
	libseccomp-dev
	busybox-static
	cpio
	acpica-tools
	clang-format
	qemu-system-x86
	socat
	debootstrap
	# VM networking (docs/networking.md): namespaces, veths and taps with ip, rules with nft
	iproute2
	nftables
	# `pip install ./sdk/python` offline (make sdk-pip-install): a venv with Debian's
	# setuptools and wheel as the build backend
	python3-venv
	python3-pip
	python3-setuptools
	python3-wheel
)
# The TypeScript SDK (sdk/typescript) needs node >= 18 and Debian's tsc; a
# node already on the PATH (e.g. a newer nodejs from another repository) is kept.
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v tsc >/dev/null 2>&1 || packages+=(node-typescript)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "install-deps: need root to install: ${missing[*]}" >&2
		exit 1
	fi
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
