"""Disk runbooks: a read-only report and cache cleaning, for any Linux machine."""

from selfdrive import Context, Operand, Risk, alert, runbook


@runbook(risk=Risk.READ_ONLY, domain="host", timeout="1m", tags=["disk"])
def disk_report(ctx: Context, path: Operand = ".") -> None:
    """Report disk space and inode use for the filesystem holding a path.

    Read-only: at every level above L0 it runs by itself, and its notes say how full
    the filesystem is, in bytes and in inodes.
    """
    space = ctx.run("df -P -k {{ path }}", readonly=True, check=True)
    inodes = ctx.run("df -P -i {{ path }}", readonly=True, check=True)
    for label, result in (("space", space), ("inodes", inodes)):
        fields = result.stdout.splitlines()[-1].split()
        ctx.note(f"{label}_used_percent", int(fields[4].rstrip("%")))
    ctx.log(space.stdout.splitlines()[-1])


@runbook(
    risk=Risk.LOW,
    domain="host",
    triggers=[alert("CacheDiskFilling", params={"path": "{{ labels.cache_dir }}"})],
    timeout="5m",
    tags=["disk", "cache"],
)
def clean_cache(ctx: Context, path: Operand = "var/cache", days: int = 7) -> None:
    """Delete cache files older than N days, and say how many bytes that freed.

    The plan lists every file that would go; nothing outside `path` is touched
    (`find -xdev`, and each name is passed to `rm` as one quoted argument).
    """
    before = int(ctx.run("du -sk {{ path }}", readonly=True, check=True).stdout.split()[0])
    found = ctx.run("find {{ path }} -xdev -type f -mtime +{{ days }} -print", readonly=True,
                    check=True)
    old = sorted(name for name in found.stdout.splitlines() if name)
    ctx.note("files_to_delete", len(old))
    for name in old:
        ctx.run("rm -f -- {{ name }}", name=name, check=True)
    if not ctx.dry_run:
        after = int(ctx.run("du -sk {{ path }}", readonly=True, check=True).stdout.split()[0])
        ctx.note("kib_freed", before - after)


@clean_cache.precondition
def cache_dir_exists(ctx: Context, path: str) -> bool:
    return ctx.run("test -d {{ path }}", readonly=True, check=False).ok


@clean_cache.verify
def no_old_files_left(ctx: Context, path: str, days: int) -> bool:
    left = ctx.run("find {{ path }} -xdev -type f -mtime +{{ days }} -print -quit",
                   readonly=True, check=False)
    return left.ok and left.stdout.strip() == ""


@runbook(risk=Risk.CRITICAL, domain="host", timeout="5m", tags=["disk", "cache"])
def wipe_cache(ctx: Context, path: Operand = "var/cache") -> None:
    """Empty a cache directory completely, whatever the files' age.

    CRITICAL on purpose: below L3 policy only ever plans it, and above it a human
    must approve.
    """
    found = ctx.run("find {{ path }} -xdev -mindepth 1 -maxdepth 1 -print", readonly=True,
                    check=True)
    for name in sorted(n for n in found.stdout.splitlines() if n):
        ctx.run("rm -rf -- {{ name }}", name=name, check=True)


@wipe_cache.verify
def cache_is_empty(ctx: Context, path: str) -> bool:
    left = ctx.run("find {{ path }} -mindepth 1 -print -quit", readonly=True, check=False)
    return left.ok and left.stdout.strip() == ""
