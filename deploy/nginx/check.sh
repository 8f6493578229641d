#!/usr/bin/env bash
# Checks deploy/nginx/agentctl.conf with a real `nginx -t`: the site is included in a minimal
# nginx.conf, and a throwaway self-signed certificate stands in for Let's Encrypt's. Installs
# Debian's nginx when it is missing; skips (exit 0, with a message) when that is not possible.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

find_nginx() { command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; }; }
if ! nginx=$(find_nginx); then
  if command -v apt-get >/dev/null 2>&1 \
    && { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light \
      || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx; } >/dev/null 2>&1 \
    && nginx=$(find_nginx); then
    :
  else
    echo "nginx site not checked: nginx is not installed and apt could not install it" >&2
    exit 0
  fi
fi
command -v openssl >/dev/null 2>&1 || { echo "nginx site not checked: no openssl to make a test certificate" >&2; exit 0; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/www" "$tmp/logs"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=hooks.example.com" \
  -keyout "$tmp/privkey.pem" -out "$tmp/fullchain.pem" >/dev/null 2>&1
sed -e "s#/etc/letsencrypt/live/hooks.example.com/#$tmp/#g" \
    -e "s#/var/www/letsencrypt#$tmp/www#g" \
    "$here/agentctl.conf" >"$tmp/site.conf"
cat >"$tmp/nginx.conf" <<CONF
pid $tmp/nginx.pid;
error_log stderr;
events {}
http {
    access_log off;
    client_body_temp_path $tmp/client_body;
    proxy_temp_path $tmp/proxy;
    include $tmp/site.conf;
}
CONF
"$nginx" -t -q -e stderr -p "$tmp" -c "$tmp/nginx.conf"
echo "deploy/nginx/agentctl.conf is valid ($("$nginx" -v 2>&1))"
