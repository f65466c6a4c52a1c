#!/bin/sh
# Creates (or refreshes) the development venv: controller tools and the Python side at current releases.
set -eu
venv=${1:-.venv}
[ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check --upgrade pip
"$venv/bin/pip" install -q --disable-pip-version-check --only-binary lxml,xmlsec -r requirements.txt
"$venv/bin/pip" install -q --disable-pip-version-check --no-deps -e milters
