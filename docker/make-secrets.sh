#!/bin/sh
# make-secrets.sh [DIR] -- the secrets docker/compose.yaml mounts, made once (default DIR:
# docker/secrets, which git ignores). A file already there is kept, so running it again changes
# nothing; delete a file to make it anew (then restart what reads it).
#
#   postgres_password        the database role's password (PostgreSQL and the replicas)
#   tokens                   maskloss-server's --auth-file: the SHA-256 of each token below
#   prometheus_token         Prometheus's token for GET /metrics (scope metrics)
#   admin_token              yours: every scope (pass it with --token-file, or as a Bearer)
#   grafana_admin_password   Grafana's user admin
#
# Without a Docker engine's swarm mode, compose mounts a secret as the file itself, with its
# owner and mode: the containers' users (maskloss 10001, postgres, nobody, grafana) must read
# it, hence mode 0644 for the mounted ones; admin_token, mounted nowhere, stays 0600. A token
# is 256 random bits in base64url (43 characters), as `maskloss token new` makes them; the
# file holds only its hash, so the maskloss CLI is not needed here.
set -eu
dir=${1:-$(dirname "$0")/secrets}
mkdir -p "$dir"
random() { head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'; }
made=""
secret() { # NAME MODE: a new random value unless the file exists
    [ -e "$dir/$1" ] && return 0
    (umask 077 && random > "$dir/$1")
    chmod "$2" "$dir/$1"
    made="$made $1"
}
secret postgres_password 0644
secret grafana_admin_password 0644
# The token file and its tokens go together: a token whose hash is not in the file is useless.
if [ ! -e "$dir/tokens" ]; then
    rm -f "$dir/prometheus_token" "$dir/admin_token"
    secret prometheus_token 0644
    secret admin_token 0600
    for t in prometheus:metrics admin:admin; do
        name=${t%%:*}
        printf '%s %s %s\n' "$(tr -d '\n' < "$dir/${name}_token" | sha256sum | cut -d' ' -f1)" \
            "$name" "${t#*:}" >> "$dir/tokens"
    done
    chmod 0644 "$dir/tokens"
    made="$made tokens"
fi
if [ -n "$made" ]; then
    echo "make-secrets: made$made in $dir"
else
    echo "make-secrets: $dir already holds every secret"
fi
