#!/usr/bin/env bash
# The five-minute tour: seed a scratch var/ folder, then plan, run and review runbooks.
# Safe on any Linux machine: everything happens under examples/quickstart/var/.
set -euo pipefail
cd "$(dirname "$0")"
command -v selfdrive >/dev/null || { echo "selfdrive is not on PATH: pip install . first" >&2; exit 2; }

mkdir -p var/cache/thumbnails var/log
for i in 1 2 3 4 5; do
  head -c 200000 /dev/urandom > "var/cache/thumbnails/old-$i.bin"
  touch -d '30 days ago' "var/cache/thumbnails/old-$i.bin"
done
head -c 50000 /dev/urandom > var/cache/thumbnails/fresh.bin
seq 1 200000 | sed 's/^/GET \/index.html 200 /' > var/log/app.log

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step selfdrive list
step selfdrive explain clean-cache
step selfdrive plan clean-cache            # dry-run: the plan lists each file; nothing changes
step selfdrive run disk-report             # READ_ONLY at L1: autonomous
step selfdrive run clean-cache --yes       # LOW by hand at L1: a human approves (--yes: you)
step selfdrive run rotate-log --yes        # MEDIUM at L1: a human approves
step selfdrive run wipe-cache              # CRITICAL at L1: policy only ever plans it
touch -d '30 days ago' var/cache/thumbnails/fresh.bin
step selfdrive trigger CacheDiskFilling -l cache_dir=var/cache   # its own alert: LOW runs by itself
step selfdrive history
printf '\nRe-run the tour any time; `selfdrive logs RUN_ID` shows one run step by step.\n'
