#!/bin/sh
# Runs CMD as the invoicehook user. Started as root (as on Fly.io), it first makes the
# volume at /data and the seller's file its own: Fly creates a volume owned by root, and a
# volume written by an older image (which ran as root) holds root's files.
set -eu
APP_USER=invoicehook
if [ "$(id -u)" = 0 ]; then
  if [ -d /data ]; then
    find /data -xdev ! -user "$APP_USER" -exec chown "$APP_USER:$APP_USER" {} +
  fi
  config="${INVOICEHOOK_CONFIG:-}"
  if [ -n "$config" ] && [ -f "$config" ]; then
    chown "$APP_USER:$APP_USER" "$config"
  fi
  exec setpriv --reuid="$APP_USER" --regid="$APP_USER" --init-groups -- "$@"
fi
exec "$@"
