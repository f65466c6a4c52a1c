#!/bin/sh
# Installs the Debian 12 packages that the lab, the tests and the host runtime need.
# Idempotent: a second run installs nothing. Postfix is installed with "No configuration"
# and no service is started, so the machine's default instance never listens anywhere.
set -eu

PACKAGES="
postfix dovecot-core dovecot-imapd dovecot-lmtpd
libmilter-dev python3-milter python3-lxml python3-xmlsec python3-cryptography
python3-prometheus-client python3-yaml python3-jinja2 python3-idna
python3-pytest python3-pytest-timeout python3-hypothesis python3-aiosmtpd
python3-venv python3-dev python3-pip build-essential pkg-config
libxml2-dev libxslt1-dev libxmlsec1-dev libxmlsec1-openssl
openssl iproute2 util-linux procps swaks dnsmasq-base prometheus supervisor
chromium fonts-dejavu-core dovecot-sieve curl
"

missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing="$missing $p"
done
if [ -z "$missing" ]; then
    echo "system packages: all present"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "system packages missing:$missing; run this script as root" >&2
    exit 1
fi

echo "system packages: installing$missing"
export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
# Never let a package's maintainer script start a daemon on this machine.
policy=/usr/sbin/policy-rc.d
created_policy=no
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    created_policy=yes
fi
trap '[ "$created_policy" = yes ] && rm -f "$policy"' EXIT
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
