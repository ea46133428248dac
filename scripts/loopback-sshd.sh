#!/usr/bin/env bash
# A real OpenSSH server on loopback, for selfdrive's remote tests and benchmarks.
#
#   scripts/loopback-sshd.sh start     # start (or restart) and wait until a login works
#   scripts/loopback-sshd.sh stop      # stop every sshd this folder started, drop its key
#   scripts/loopback-sshd.sh status    # exit 0 when all of them run
#
# Settings (environment):
#   SSHD_DIR    folder for keys, configs, logs, known_hosts   (/tmp/selfdrive-sshd)
#   SSHD_PORT   port on every address                          (2222)
#   SSHD_USER   the login user, created if missing             (sdtest)
#   SSHD_HOSTS  N > 0: listen on 127.0.0.2 … 127.0.0.(N+1) instead of 127.0.0.1 (0)
#   SSHD_ADDRESSES  space-separated 127.x.y.z addresses to listen on (overrides SSHD_HOSTS)
#
# Every address gets one line "[127.0.0.K]:PORT ssh-ed25519 KEY" in $SSHD_DIR/known_hosts.
# One sshd listens on at most 16 addresses (sshd's own limit), so N > 16 runs several.
# The login key is $SSHD_DIR/client_ed25519; it is added to the user's authorized_keys
# (beside other folders' keys, so several servers can run at once) and removed by
# `stop`. Needs root (sshd, useradd, /run/sshd).
# `start` prints the settings as KEY=VALUE lines on stdout for a caller to read.
#
# Traps this avoids: authorized_keys under /tmp is refused by StrictModes (it lives in
# the user's ~/.ssh); useradd leaves the account locked and sshd then refuses keys with
# UsePAM no (usermod -p '*'); a daemonised sshd exits 0 even when the port is taken, so
# it runs with -D in the background and is probed; Ansible needs the sftp subsystem
# (else it falls back to scp, then dd) and the ssh client binary.
set -euo pipefail

D=${SSHD_DIR:-/tmp/selfdrive-sshd}
PORT=${SSHD_PORT:-2222}
U=${SSHD_USER:-sdtest}
N=${SSHD_HOSTS:-0}
LISTEN=${SSHD_ADDRESSES:-}
PER_SSHD=16

die() { echo "loopback-sshd: $*" >&2; exit 1; }

addresses() {
    local a
    if [ -n "$LISTEN" ]; then
        for a in $LISTEN; do
            [[ $a =~ ^127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "SSHD_ADDRESSES: $a is not a loopback address"
            echo "$a"
        done
    elif [ "$N" -gt 0 ]; then
        [ "$N" -le 250 ] || die "SSHD_HOSTS=$N: at most 250 loopback addresses"
        for ((k = 2; k <= N + 1; k++)); do echo "127.0.0.$k"; done
    else
        echo 127.0.0.1
    fi
}

authorize() {  # add|remove FILE: this folder's client key in FILE (other folders' keys stay)
    local op=$1 file=$2 pub
    [ -f "$D/client_ed25519.pub" ] || return 0
    pub=$(cut -d' ' -f1,2 "$D/client_ed25519.pub")
    (
        flock 9
        touch "$file"
        grep -vF "$pub" "$file" >"$file.new" || true
        [ "$op" = add ] && echo "$pub selfdrive-test $D" >>"$file.new"
        chown "$U:$U" "$file.new" && chmod 600 "$file.new" && mv "$file.new" "$file"
    ) 9>"/tmp/.selfdrive-sshd-$U-keys.lock"
}

stop() {
    local pidfile pid
    shopt -s nullglob
    for pidfile in "$D"/sshd-*.pid; do
        pid=$(cat "$pidfile" 2>/dev/null || true)
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$pidfile"
    done
}

stop_and_forget() {
    stop
    local home
    if home=$(getent passwd "$U" | cut -d: -f6) && [ -f "$home/.ssh/authorized_keys" ]; then
        authorize remove "$home/.ssh/authorized_keys"
    fi
}

status() {
    local pidfile pid any=0
    shopt -s nullglob
    for pidfile in "$D"/sshd-*.pid; do
        any=1
        pid=$(cat "$pidfile")
        kill -0 "$pid" 2>/dev/null || { echo "sshd $pidfile ($pid) is not running"; return 1; }
    done
    [ "$any" = 1 ] || { echo "no sshd started from $D"; return 1; }
    echo "running"
}

install_openssh() {
    if [ ! -x /usr/sbin/sshd ] || ! command -v ssh >/dev/null || ! command -v ssh-keyscan >/dev/null; then
        echo "loopback-sshd: installing openssh-server and openssh-client" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq openssh-server openssh-client >&2
    fi
}

write_config() {  # $1: config file, $2: pid index, rest: addresses
    local cfg=$1 idx=$2 a
    shift 2
    {
        echo "Port $PORT"
        for a in "$@"; do echo "ListenAddress $a"; done
        cat <<EOF
HostKey $D/host_ed25519
PidFile none
AuthorizedKeysFile .ssh/authorized_keys
PermitRootLogin no
AllowUsers $U
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
MaxStartups 100:30:200
MaxSessions 50
Subsystem sftp internal-sftp
LogLevel INFO
EOF
    } >"$cfg"
    /usr/sbin/sshd -t -f "$cfg" || die "sshd rejected $cfg (index $idx)"
}

probe_login() {  # $1: address
    ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$D/known_hosts" \
        -o GlobalKnownHostsFile=/dev/null -o ConnectTimeout=2 -o LogLevel=ERROR \
        -i "$D/client_ed25519" -p "$PORT" "$U@$1" true </dev/null >/dev/null 2>&1
}

show_logs() {
    local f
    for f in "$D"/sshd-*.log; do echo "--- $f" >&2; tail -n 30 "$f" >&2 || true; done
}

start() {
    [ "$(id -u)" = 0 ] || die "must run as root (sshd, useradd)"
    install_openssh
    mkdir -p "$D" && chmod 700 "$D"
    install -d -m 755 /run/sshd
    [ -f "$D/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C selfdrive-test-host -f "$D/host_ed25519"
    [ -f "$D/client_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C selfdrive-test-client -f "$D/client_ed25519"
    id "$U" >/dev/null 2>&1 || useradd -m -s /bin/bash "$U"
    usermod -p '*' "$U"
    local home
    home=$(getent passwd "$U" | cut -d: -f6)
    install -d -m 700 -o "$U" -g "$U" "$home/.ssh"
    authorize add "$home/.ssh/authorized_keys"

    stop
    rm -f "$D"/sshd-*.conf "$D"/sshd-*.log
    mapfile -t addrs < <(addresses)
    local hostkey a i idx=0
    hostkey=$(cut -d' ' -f1,2 "$D/host_ed25519.pub")
    : >"$D/known_hosts"
    for a in "${addrs[@]}"; do
        if [ "$PORT" = 22 ]; then echo "$a $hostkey"; else echo "[$a]:$PORT $hostkey"; fi
    done >>"$D/known_hosts"

    for ((i = 0; i < ${#addrs[@]}; i += PER_SSHD)); do
        write_config "$D/sshd-$idx.conf" "$idx" "${addrs[@]:i:PER_SSHD}"
        /usr/sbin/sshd -D -f "$D/sshd-$idx.conf" -E "$D/sshd-$idx.log" </dev/null >/dev/null 2>&1 &
        echo $! >"$D/sshd-$idx.pid"
        idx=$((idx + 1))
    done

    # Wait until every address answers with our host key, then until a login works.
    local want=${#addrs[@]} got=0 pending
    for _ in $(seq 50); do
        status >/dev/null || { show_logs; stop; die "an sshd exited at start (see the log above)"; }
        pending=$(ssh-keyscan -T 2 -t ed25519 -p "$PORT" "${addrs[@]}" 2>/dev/null | grep -c -F "${hostkey#* }" || true)
        got=$pending
        if [ "$got" -ge "$want" ] && probe_login "${addrs[0]}"; then
            echo "SSHD_DIR=$D"
            echo "SSHD_PORT=$PORT"
            echo "SSHD_USER=$U"
            echo "SSHD_KNOWN_HOSTS=$D/known_hosts"
            echo "SSHD_CLIENT_KEY=$D/client_ed25519"
            echo "SSHD_ADDRESSES=${addrs[*]}"
            echo "SSHD_PIDS=$(cat "$D"/sshd-*.pid | tr '\n' ' ')"
            return 0
        fi
        sleep 0.1
    done
    show_logs
    stop
    die "sshd did not answer on all $want addresses of port $PORT ($got did)"
}

case "${1:-start}" in
    start) start ;;
    stop) stop_and_forget ;;
    status) status ;;
    *) die "usage: $0 start|stop|status" ;;
esac
