"""A runaway log: rotate it (compressed copy, then truncate) or cut it to its tail."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from selfdrive import Context, Risk, runbook
from selfdrive.library._common import AbsPath, HostName, is_protected, where

MIB = 1024 * 1024


@runbook(risk=Risk.MEDIUM, domain="host", lock="log:{{ host or 'local' }}:{{ path }}",
         timeout="30m", tags=["library", "logs", "disk"])
def tame_runaway_log(ctx: Context, path: AbsPath,
                     max_mb: Annotated[int, Field(ge=1)] = 1024,
                     mode: Literal["rotate", "truncate"] = "rotate",
                     keep: Annotated[int, Field(ge=1, le=50)] = 3,
                     tail_mb: Annotated[int, Field(ge=0)] = 16,
                     host: HostName | None = None) -> None:
    """Shrink a log file that grew past `max_mb`, without restarting its writer.

    `mode=rotate` (default) compresses a copy to `PATH.1.gz` (older copies shift to
    `.2.gz` … and those beyond `keep` go), then truncates the file in place. The copy
    is written to a temporary name and renamed only when complete, so a full disk
    fails the run before anything is truncated. `mode=truncate` keeps only the last
    `tail_mb` MiB, for logs nobody needs beyond the recent past.

    Both keep the file's inode, so a writer holding it open carries on (it should
    open with O_APPEND, as loggers do). Lines written between the copy and the
    truncation are lost: the classic copytruncate window, usually milliseconds.

    Precondition: the file exists and is larger than `max_mb` (else nothing is done,
    exit 4). Verification: it is now smaller, and the archive is a valid gzip.
    Rollback (body or verification failed): removes a half-written temporary archive;
    nothing else needs undoing, since the log is only truncated after its copy is safe.
    """
    on = where(ctx, host)
    size = int(on.run("stat -c %s -- {{ path }}", readonly=True, check=True).stdout)
    ctx.note("size_mb_before", round(size / MIB, 1))
    if mode == "truncate":
        on.run("tail -c {{ keep_bytes }} -- {{ path }} > {{ tmp }} && cat -- {{ tmp }} > {{ path }}"
               " && rm -f -- {{ tmp }}", keep_bytes=tail_mb * MIB, tmp=f"{path}.selfdrive-tail",
               check=True)
        return
    on.run("gzip -c -- {{ path }} > {{ tmp }}", tmp=f"{path}.1.gz.selfdrive-tmp", check=True)
    on.run("rm -f -- {{ oldest }}", oldest=f"{path}.{keep}.gz", check=True)
    for n in range(keep - 1, 0, -1):
        on.run("if [ -f {{ src }} ]; then mv -f -- {{ src }} {{ dst }}; fi",
               src=f"{path}.{n}.gz", dst=f"{path}.{n + 1}.gz", check=True)
    on.run("mv -f -- {{ tmp }} {{ archive }}", tmp=f"{path}.1.gz.selfdrive-tmp",
           archive=f"{path}.1.gz", check=True)
    on.run("truncate -s 0 -- {{ path }}", check=True)


@tame_runaway_log.precondition
def the_log_is_too_big(ctx: Context, path: str, max_mb: int, host: str | None) -> bool:
    """A regular file (not a symlink), larger than ``max_mb``."""
    if is_protected(path):
        raise ValueError(f"{path} is a system folder, not a log file")
    on = where(ctx, host)
    if not on.run("test -f {{ path }} && test ! -L {{ path }}", readonly=True,
                  check=False).ok:
        raise ValueError(f"{path} is not a regular file")
    size = int(on.run("stat -c %s -- {{ path }}", readonly=True, check=True).stdout)
    if size <= max_mb * MIB:
        raise ValueError(f"{path} is {size / MIB:.1f} MiB, not above max_mb={max_mb}")
    return True


@tame_runaway_log.verify
def the_log_is_small_and_archived(ctx: Context, path: str, max_mb: int, mode: str,
                                  host: str | None) -> bool:
    on = where(ctx, host)
    size = on.run("stat -c %s -- {{ path }}", readonly=True, check=False)
    if not size.ok or int(size.stdout) > max_mb * MIB:
        return False
    if mode == "rotate":
        return on.run("gzip -t -- {{ archive }}", archive=f"{path}.1.gz", readonly=True,
                      check=False).ok
    return True


@tame_runaway_log.rollback
def remove_partial_archives(ctx: Context, path: str, host: str | None) -> None:
    """Leave no half-written copy behind; the log itself was never truncated early."""
    where(ctx, host).run("rm -f -- {{ tmp }} {{ tail }}", tmp=f"{path}.1.gz.selfdrive-tmp",
                         tail=f"{path}.selfdrive-tail", check=True)
