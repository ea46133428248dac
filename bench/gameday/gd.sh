#!/bin/bash
# The hosts' control command, copied into the fleet with @FLEET@ filled in. A runbook
# runs it over SSH: the host is the address the SSH session came in on ($SSH_CONNECTION),
# so a command sent to api2 acts on api2 only.
# gd ACTION SERVICE: start|stop|restart|health|checkconfig|rollback-config|renew-cert
# gd disk-used: percent used of the host's disk (a tmpfs, or a folder capped by etc/disk.cap)
set -u
FLEET=@FLEET@
if [ -n "${GD_HOST:-}" ]; then HOST=$GD_HOST; else
  addr=$(echo "${SSH_CONNECTION:-}" | cut -d' ' -f3)
  HOST=$(awk -v a="$addr" '$2 == a {print $1}' "$FLEET/hosts.map")
fi
[ -n "${HOST:-}" ] || { echo "gd: cannot tell which host this is" >&2; exit 2; }
H=$FLEET/hosts/$HOST
action=${1:-}; svc=${2:-}
if [ "$action" = disk-used ]; then
  if [ -f "$H/etc/disk.cap" ]; then
    used=$(du -sk "$H/disk" | cut -f1); echo $((used * 100 / $(cat "$H/etc/disk.cap")))
  else
    df -P -k -- "$H/disk" | awk 'END { sub("%", "", $5); print $5 }'
  fi
  exit 0
fi
[ -f "$H/etc/$svc.json" ] || { echo "gd: $HOST runs no service '$svc'" >&2; exit 2; }
# one action at a time per service: a person's start and a runbook's restart must not race
exec 9>"$H/run/$svc.lock"
flock 9
pid() { cat "$H/run/$svc.pid" 2>/dev/null; }
alive() { local p; p=$(pid) && [ -n "$p" ] && tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF "service.py $svc $H "; }
health() { curl -ksf -o /dev/null --max-time 2 "$(cat "$H/etc/$svc.url")/health"; }
answers() { [ "$(curl -ks -o /dev/null -w '%{http_code}' --max-time 2 "$(cat "$H/etc/$svc.url")/health")" != 000 ]; }
stop() {
  if alive; then kill -9 "$(pid)"; for _ in $(seq 50); do alive || break; sleep 0.1; done; fi
  rm -f "$H/run/$svc.pid"
}
start() {
  alive && return 0
  # 9>&-: the service must not hold the action lock after this command ends
  setsid python3 "$FLEET/bin/service.py" "$svc" "$H" >>"$H/log/$svc.log" 2>&1 </dev/null 9>&- &
  local child=$!
  for _ in $(seq 100); do
    answers && return 0
    kill -0 "$child" 2>/dev/null || { echo "gd: $svc on $HOST exited at start:" >&2; tail -n 3 "$H/log/$svc.log" >&2; return 1; }
    sleep 0.1
  done
  echo "gd: $svc on $HOST did not answer within 10s" >&2; return 1
}
checkconfig() { python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); t=c.get("threads"); sys.exit(0 if isinstance(t,int) and not isinstance(t,bool) and 1<=t<=64 else 1)' "$H/etc/$svc.json"; }
case "$action" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  health) health ;;
  checkconfig) checkconfig ;;
  rollback-config)
    [ -f "$H/etc/$svc.json.previous" ] || { echo "gd: no previous config of $svc on $HOST" >&2; exit 1; }
    mv -f "$H/etc/$svc.json.previous" "$H/etc/$svc.json" ;;
  renew-cert)
    [ "$svc" = edge ] || { echo "gd: $svc serves no certificate" >&2; exit 2; }
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$HOST" \
      -days 90 -keyout "$H/tls/key.pem.new" -out "$H/tls/cert.pem.new" 2>/dev/null || exit 1
    mv -f "$H/tls/key.pem.new" "$H/tls/key.pem" && mv -f "$H/tls/cert.pem.new" "$H/tls/cert.pem"
    stop; start ;;
  *) echo "gd: unknown action '$action'" >&2; exit 2 ;;
esac
