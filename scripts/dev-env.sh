#!/usr/bin/env bash
# Disposable stand-in for Portainer on loopback, for tests and demos.
#
# Usage: scripts/dev-env.sh [--demo] COMMAND [ARGS...]
#
# Starts a private Docker daemon (its own data, sockets and containerd, all in
# one temporary folder), imports a tiny busybox image into it, and puts nginx
# in front of it answering Portainer's API paths with an API key, over plain
# HTTP and over TLS with a certificate from a CA made for this run. nginx also
# serves the daemon itself over TLS with client certificates, the way
# DOCKER_TLS_VERIFY expects. Then it runs COMMAND with PORTAINER_* variables
# describing all that, tears everything down and exits with COMMAND's exit
# status.
#
# With --demo a background loop also runs a short container every 5 seconds,
# so `scripts/dev-env.sh --demo cargo run --example listen` shows events.
#
# Variables exported to COMMAND:
#   PORTAINER_URL, PORTAINER_API_KEY            what the examples read
#   PORTAINER_TEST_URL, PORTAINER_TEST_API_KEY  the same values, for the tests
#   PORTAINER_TEST_TLS_URL         https://127.0.0.1:PORT, the same stand-in over TLS
#   PORTAINER_TEST_CA_FILE         the CA (PEM) that signed its certificate
#   PORTAINER_TEST_DOCKER_HOST     unix:// socket of the private daemon
#   PORTAINER_TEST_DOCKER_TCP      tcp://127.0.0.1:PORT, the same daemon
#   PORTAINER_TEST_DOCKER_TLS_HOST tcp://127.0.0.1:PORT, the same daemon over
#                                  TLS, refusing clients without a certificate
#   PORTAINER_TEST_DOCKER_CERT_PATH  ca.pem, cert.pem, key.pem for it, laid
#                                  out as DOCKER_CERT_PATH expects
#   PORTAINER_TEST_IMAGE           busybox image with sh, true, sleep, echo...
#   PORTAINER_TEST_NGINX_PID_FILE  nginx master pid (to stop nginx in a test)
#   PORTAINER_TEST_NGINX_CONF      its config (restart: nginx -c "$THAT")
#   PORTAINER_TEST_DOCKERD_PID_FILE
#   PORTAINER_TEST_DOCKERD_ARGS_FILE  dockerd's arguments, one per line (to restart it)
#
# Fake environments served by nginx, over HTTP and HTTPS alike
# (GET /api/endpoints lists them):
#   1, 2  "primary", "secondary": both proxy to the private daemon
#   3     "gone": its Docker socket does not exist, so nginx answers 502
#   5     "k8s": a Kubernetes environment, no Docker API (404 like any other id)
set -euo pipefail

image=portainer-test/busybox:latest

log() { printf 'dev-env: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { echo "usage: $0 [--demo] COMMAND [ARGS...]" >&2; exit 2; }

demo=0
case ${1:-} in
  -h | --help) usage ;;
  --demo) demo=1; shift ;;
esac
[[ $# -gt 0 ]] || usage

if [[ $(id -u) -ne 0 ]]; then
  echo "dev-env: must run as root (it starts its own Docker daemon and nginx)." >&2
  exit 1
fi

# --- 1. packages ------------------------------------------------------------
# /bin/busybox must be the static build: it runs alone inside the image.
if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null \
  || ! command -v nginx >/dev/null || ! command -v openssl >/dev/null \
  || ! dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q 'ok installed'; then
  log "installing docker.io nginx-light busybox-static openssl"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -q -o DPkg::Lock::Timeout=600 update
  apt-get -q -y -o DPkg::Lock::Timeout=600 install docker.io nginx-light busybox-static openssl
fi

# --- helpers ----------------------------------------------------------------

# free_port [TAKEN...]: print a random TCP port on 127.0.0.1 that nothing is
# listening on and that is not one of TAKEN (picked earlier, not yet bound).
free_port() {
  local port tries
  for tries in {1..100}; do
    port=$((20000 + RANDOM % 12000)) # below Linux's ephemeral port range
    [[ " $* " == *" $port "* ]] && continue
    # A refused connection means the port is free.
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  die "no free TCP port found"
}

# http_get PORT PATH [API_KEY]: print the raw HTTP/1.0 response (5 s timeout).
http_get() (
  exec 3<>"/dev/tcp/127.0.0.1/$1"
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nX-API-Key: %s\r\n\r\n' "$2" "${3:-}" >&3
  while IFS= read -r -t 5 line || [[ -n $line ]]; do
    printf '%s\n' "$line"
    line=
  done <&3
)

# Print the ids of processes whose command line mentions a path in $T.
pids_using_tmp() {
  local dir pid args
  for dir in /proc/[0-9]*; do
    pid=${dir#/proc/}
    [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
    mapfile -d '' args <"$dir/cmdline" 2>/dev/null || continue
    [[ "${args[*]}" == *"$T/"* ]] && echo "$pid"
  done
  return 0
}

# alive PID: true while PID runs. A zombie counts as gone: daemons are
# reaped by PID 1, which may take its time.
alive() {
  local stat
  { stat=$(<"/proc/$1/stat"); } 2>/dev/null || return 1
  stat=${stat##*) } # drop "PID (COMM) ", leaving the state letter first
  [[ ${stat:0:1} != Z ]]
}

# stop_pid PID SECONDS: SIGTERM, wait up to SECONDS, then SIGKILL.
stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < $2 * 20; i++)); do
    alive "$pid" || return 0
    sleep 0.05
  done
  log "pid $pid did not stop in $2 s, killing it"
  kill -KILL "$pid" 2>/dev/null || true
  sleep 0.2
}

# --- teardown (runs on any exit) ----------------------------------------------
T=
cmd_pid=
demo_pid=
dockerd_pid=

teardown() {
  local status=$? pid mnt
  set +e
  # Let teardown finish. SIGPIPE too: with `dev-env.sh ... | tee log`, a
  # Ctrl-C also ends tee, and our next message would kill us half-way.
  trap '' INT TERM HUP PIPE
  [[ -n $T && -d $T ]] || exit "$status"
  log "tearing down"
  # The command itself, if we are leaving early (e.g. setup failed mid-way).
  [[ -n $cmd_pid ]] && stop_pid "$cmd_pid" 5
  # Demo loop: it leads its own process group.
  if [[ -n $demo_pid ]]; then
    kill -TERM -- "-$demo_pid" 2>/dev/null
    sleep 0.2
    kill -KILL -- "-$demo_pid" 2>/dev/null
  fi
  # nginx, by its pid file (a test may have restarted it).
  if [[ -s $T/nginx.pid ]]; then
    stop_pid "$(<"$T/nginx.pid")" 10
  fi
  # Containers still running: kill them now, as dockerd would give each one
  # 10 s to stop (busybox sh as PID 1 ignores SIGTERM).
  if [[ -S $T/docker.sock ]]; then
    timeout 10 docker -H "unix://$T/docker.sock" ps -q 2>/dev/null \
      | xargs -r timeout 10 docker -H "unix://$T/docker.sock" kill >/dev/null 2>&1
  fi
  # dockerd, which stops its own containerd.
  if [[ -s $T/dockerd.pid ]]; then
    stop_pid "$(<"$T/dockerd.pid")" 20
  elif [[ -n $dockerd_pid ]]; then
    stop_pid "$dockerd_pid" 20
  fi
  # Anything else still mentioning $T (containerd, shims, nginx restarted
  # by hand, a stray docker CLI...).
  for pid in $(pids_using_tmp); do
    log "leftover process $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)"
    kill -KILL "$pid" 2>/dev/null
  done
  # Mounts left under $T (container rootfs, netns files), deepest first.
  findmnt -rn -o TARGET | grep -F -- "$T/" | sort -r | while read -r mnt; do
    umount "$mnt" 2>/dev/null || umount -l "$mnt"
  done
  # --one-file-system: never delete through a mount that is still there.
  rm -rf --one-file-system "$T"
  [[ -e $T ]] && log "warning: could not remove $T"
  log "done, exit status $status"
  exit "$status"
}

# Signals: during setup they end the script (teardown then runs). While
# COMMAND runs, SIGTERM/SIGHUP are passed on to it and we wait for it to exit.
# SIGINT is not passed on: a Ctrl-C from the terminal reaches COMMAND by itself
# (same process group), and COMMAND decides whether to exit.
interrupted=0
on_signal() {
  interrupted=1
  if [[ -z $cmd_pid ]]; then
    trap '' PIPE # see teardown
    log "interrupted by SIG$1 during setup"
    exit $((128 + $(kill -l "$1")))
  fi
  [[ $1 == INT ]] || kill -s "$1" "$cmd_pid" 2>/dev/null || true
}

T=$(mktemp -d /tmp/portainer-env.XXXXXX)
trap teardown EXIT
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'on_signal HUP' HUP
chmod 755 "$T"
started=$SECONDS

# --- 2. private Docker daemon ---------------------------------------------------
docker_host=unix://$T/docker.sock
docker_tcp_port=$(free_port)
echo '{}' >"$T/daemon.json" # so /etc/docker/daemon.json is not read

# setsid: its own session, so a Ctrl-C in the terminal does not stop it
# before COMMAND has finished. --tls=false is said explicitly so the TCP
# listener starts without the "insecure" startup delay.
dockerd_args=(
  --config-file "$T/daemon.json"
  --data-root "$T/data"
  --exec-root "$T/exec"
  --pidfile "$T/dockerd.pid"
  --host "$docker_host"
  --host "tcp://127.0.0.1:$docker_tcp_port"
  --tls=false
  --storage-driver vfs
  --bridge none
  --iptables=false
  --ip6tables=false
  --ip-forward=false
  --ip-masq=false
  --userland-proxy=false
  --shutdown-timeout 2
)
# One argument per line, so a test can restart the daemon the same way.
printf '%s\n' "${dockerd_args[@]}" >"$T/dockerd.args"
setsid dockerd "${dockerd_args[@]}" </dev/null >"$T/dockerd.log" 2>&1 &
dockerd_pid=$!

# An array, not a function: redirections on a function call would also apply
# to a signal trap that runs meanwhile, hiding teardown's messages.
dk=(docker -H "$docker_host")

deadline=$((SECONDS + 60))
until "${dk[@]}" version >/dev/null 2>&1; do
  if ! kill -0 "$dockerd_pid" 2>/dev/null || ((SECONDS >= deadline)); then
    tail -n 40 "$T/dockerd.log" >&2
    die "private dockerd did not come up (log above)"
  fi
  sleep 0.2
done

# --- 3. busybox image -----------------------------------------------------------
mkdir -p "$T/rootfs/bin" "$T/rootfs/etc" "$T/rootfs/tmp"
cp /bin/busybox "$T/rootfs/bin/busybox"
for applet in sh true false sleep echo cat ls env; do
  ln -s busybox "$T/rootfs/bin/$applet"
done
tar -C "$T/rootfs" -cf "$T/busybox.tar" .
"${dk[@]}" import --change 'ENV PATH=/bin' --change 'CMD ["sh"]' "$T/busybox.tar" "$image" >/dev/null
rm -rf "$T/rootfs" "$T/busybox.tar"
"${dk[@]}" run --rm --network none "$image" /bin/true \
  || die "cannot run a container from $image (see $T/dockerd.log)"

# --- 4. certificates ------------------------------------------------------------
# A CA made for this run, a server certificate for 127.0.0.1 and localhost,
# and a client certificate; the client's folder is a DOCKER_CERT_PATH.
tls=$T/tls
mkdir -p "$tls/client"
cat >"$tls/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = portainer-rs test
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
EOF
# new_key_and_request NAME CN: NAME.key and NAME.csr in $tls.
new_key_and_request() {
  openssl req -new -config "$tls/openssl.cnf" -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -nodes -subj "/CN=$2" -keyout "$tls/$1.key" -out "$tls/$1.csr" 2>/dev/null
}
# sign NAME SECTION: NAME.pem, signed by the CA with the extensions of SECTION.
sign() {
  openssl x509 -req -in "$tls/$1.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
    -days 7 -extfile "$tls/openssl.cnf" -extensions "$2" -out "$tls/$1.pem" 2>/dev/null
}
openssl req -x509 -config "$tls/openssl.cnf" -extensions ca -newkey ec \
  -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 -subj "/CN=portainer-rs test CA" \
  -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null || die "openssl could not make a CA"
{ new_key_and_request server 127.0.0.1 && sign server server; } \
  || die "openssl could not make the server certificate"
{ new_key_and_request client "portainer-rs test client" && sign client client; } \
  || die "openssl could not make the client certificate"
cp "$tls/ca.pem" "$tls/client/ca.pem"
cp "$tls/client.pem" "$tls/client/cert.pem"
cp "$tls/client.key" "$tls/client/key.pem"

# --- 5. nginx as Portainer's front ----------------------------------------------
nginx_port=$(free_port "$docker_tcp_port")
nginx_tls_port=$(free_port "$docker_tcp_port" "$nginx_port")
docker_tls_port=$(free_port "$docker_tcp_port" "$nginx_port" "$nginx_tls_port")
api_key=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
mkdir -p "$T/nginx-tmp"

# Unescaped $T, $nginx_port, $api_key are filled in now; \$x are nginx's.
cat >"$T/nginx.conf" <<EOF
# Generated by scripts/dev-env.sh for one run.
user root; # workers must reach the root-owned Docker socket
worker_processes 1;
daemon on;
pid $T/nginx.pid;
error_log $T/nginx-error.log;

events {
  worker_connections 1024;
}

http {
  access_log $T/nginx-access.log;
  client_body_temp_path $T/nginx-tmp/body;
  proxy_temp_path $T/nginx-tmp/proxy;
  fastcgi_temp_path $T/nginx-tmp/fastcgi;
  uwsgi_temp_path $T/nginx-tmp/uwsgi;
  scgi_temp_path $T/nginx-tmp/scgi;
  default_type application/json;
  client_max_body_size 0;

  server {
    listen 127.0.0.1:$nginx_port;
    include $T/portainer-api.conf;
  }

  server {
    listen 127.0.0.1:$nginx_tls_port ssl;
    ssl_certificate $tls/server.pem;
    ssl_certificate_key $tls/server.key;
    include $T/portainer-api.conf;
  }

  # The daemon itself over TLS, for clients with a certificate from the CA.
  server {
    listen 127.0.0.1:$docker_tls_port ssl;
    ssl_certificate $tls/server.pem;
    ssl_certificate_key $tls/server.key;
    ssl_client_certificate $tls/ca.pem;
    ssl_verify_client on;

    location ~ ^/(.*)\$ {
      proxy_pass http://unix:$T/docker.sock:/\$1\$is_args\$args;
      proxy_http_version 1.1;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 24h;
      proxy_send_timeout 24h;
    }
  }
}
EOF

# Portainer's API paths, served by both the HTTP and the HTTPS server.
cat >"$T/portainer-api.conf" <<EOF
    # Every path needs the API key, as in Portainer.
    if (\$http_x_api_key != "$api_key") {
      return 401 '{"message":"Invalid JWT token","details":"Unauthorized"}';
    }

    location = /api/endpoints {
      return 200 '[{"Id":1,"Name":"primary","Type":1,"Status":1,"URL":"unix:///var/run/docker.sock"},{"Id":2,"Name":"secondary","Type":1,"Status":1,"URL":"unix:///var/run/docker.sock"},{"Id":3,"Name":"gone","Type":1,"Status":2,"URL":"unix:///nonexistent.sock"},{"Id":5,"Name":"k8s","Type":5,"Status":1,"URL":"https://kubernetes.default.svc"}]';
    }

    # Environments 1 and 2: the private daemon. \$1 is the id, \$2 the
    # Docker API path. Unbuffered both ways so event streams flow at once.
    location ~ ^/api/endpoints/(1|2)/docker/(.*)\$ {
      proxy_pass http://unix:$T/docker.sock:/\$2\$is_args\$args;
      proxy_http_version 1.1;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 24h;
      proxy_send_timeout 24h;
    }

    # Environment 3: its daemon is unreachable, so nginx answers 502.
    location ~ ^/api/endpoints/3/docker/(.*)\$ {
      proxy_pass http://unix:$T/nonexistent.sock:/\$1\$is_args\$args;
    }

    # Any other environment id (including 5, the Kubernetes one).
    location ~ ^/api/endpoints/[^/]+/docker(/|\$) {
      return 404 '{"message":"Unable to find an environment with the specified identifier inside the database","details":"object not found inside the database"}';
    }

    location / {
      return 404 '{"message":"Not found","details":"no such route in this stand-in"}';
    }
EOF

nginx -t -q -c "$T/nginx.conf" -e "$T/nginx-error.log" || die "bad nginx config $T/nginx.conf"
nginx -c "$T/nginx.conf" -e "$T/nginx-error.log"

# Wait until a Docker API call goes through nginx to the daemon.
deadline=$((SECONDS + 30))
until http_get "$nginx_port" /api/endpoints/1/docker/_ping "$api_key" 2>/dev/null \
  | head -n 1 | grep -q ' 200 '; do
  if ((SECONDS >= deadline)); then
    tail -n 20 "$T/nginx-error.log" >&2
    die "nginx on 127.0.0.1:$nginx_port does not reach the daemon (log above)"
  fi
  sleep 0.2
done

# --- 6. environment for COMMAND ----------------------------------------------------
export PORTAINER_URL=http://127.0.0.1:$nginx_port
export PORTAINER_API_KEY=$api_key
export PORTAINER_TEST_URL=$PORTAINER_URL
export PORTAINER_TEST_API_KEY=$api_key
export PORTAINER_TEST_TLS_URL=https://127.0.0.1:$nginx_tls_port
export PORTAINER_TEST_CA_FILE=$tls/ca.pem
export PORTAINER_TEST_DOCKER_HOST=$docker_host
export PORTAINER_TEST_DOCKER_TCP=tcp://127.0.0.1:$docker_tcp_port
export PORTAINER_TEST_DOCKER_TLS_HOST=tcp://127.0.0.1:$docker_tls_port
export PORTAINER_TEST_DOCKER_CERT_PATH=$tls/client
export PORTAINER_TEST_IMAGE=$image
export PORTAINER_TEST_NGINX_PID_FILE=$T/nginx.pid
export PORTAINER_TEST_NGINX_CONF=$T/nginx.conf
export PORTAINER_TEST_DOCKERD_PID_FILE=$T/dockerd.pid
export PORTAINER_TEST_DOCKERD_ARGS_FILE=$T/dockerd.args

cat >&2 <<EOF
dev-env: ready in $((SECONDS - started)) s
  Portainer stand-in  $PORTAINER_URL  and  $PORTAINER_TEST_TLS_URL
                      (API key in \$PORTAINER_API_KEY, CA in $PORTAINER_TEST_CA_FILE)
  Docker daemon       $PORTAINER_TEST_DOCKER_HOST  and  $PORTAINER_TEST_DOCKER_TCP
  daemon over TLS     $PORTAINER_TEST_DOCKER_TLS_HOST
                      (DOCKER_CERT_PATH=$PORTAINER_TEST_DOCKER_CERT_PATH)
  logs                $T/{dockerd,nginx-error,nginx-access}.log
  make some events:   docker -H $docker_host run --rm --network none $image sh -c 'echo hi'
EOF

# --- 7. demo loop ----------------------------------------------------------------------
if ((demo)); then
  # Own process group (setsid) so teardown can stop it and its docker CLI.
  setsid bash -c '
    n=0
    while :; do
      n=$((n + 1))
      docker -H "$1" run --rm --network none --name "demo-$n" "$2" sh -c "sleep 1" >/dev/null 2>&1 || true
      sleep 4
    done' demo-loop "$docker_host" "$image" </dev/null >/dev/null 2>&1 &
  demo_pid=$!
  log "demo: a container named demo-N runs every 5 s"
fi

# --- 8. run COMMAND -------------------------------------------------------------------
# In the background, so that `wait` can be interrupted by SIGTERM and we can
# pass it on; with its SIGINT/SIGQUIT back to default (bash ignores them in
# background jobs) and with our stdin (bash would give it /dev/null).
if ! { exec 3<&0; } 2>/dev/null; then exec 3</dev/null; fi # stdin may be closed
(
  trap - INT QUIT
  exec "$@" <&3 3<&-
) &
cmd_pid=$!
exec 3<&-

# A trapped signal interrupts `wait`: go on waiting while COMMAND still runs.
# (Never `wait` again for a COMMAND that has ended: bash may have reaped it
# already, and would then block until some other child ends.)
while :; do
  interrupted=0
  wait "$cmd_pid" && status=0 || status=$?
  if ((interrupted)) && alive "$cmd_pid"; then continue; fi
  break
done
cmd_pid=

# --- 9. teardown: the EXIT trap ---------------------------------------------------------
exit "$status"
