"""Disk pressure: delete old files that match cleaning rules, and nothing else."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from selfdrive import Context, Risk, runbook
from selfdrive.library._common import AbsPath, HostName, OneOrMore, is_protected, normalised, where

Glob = Annotated[str, StringConstraints(pattern=r"^[^/\x00]+$")]

# \( … \) group the -name tests; the patterns are quoted, so a glob reaches find intact.
FIND = ("find {{ path }} -xdev -type f \\( {% for p in patterns %}{% if not loop.first %}"
        "-o {% endif %}-name {{ p }} {% endfor %}\\) -mtime +{{ older_than_days }}")


@runbook(risk=Risk.LOW, domain="host", lock="disk:{{ host or 'local' }}:{{ path }}",
         timeout="15m", tags=["library", "disk"])
def free_disk_space(ctx: Context, path: AbsPath,
                    patterns: OneOrMore[Glob] = ["*.log.[0-9]*", "*.gz", "*.tmp"],  # noqa: B006
                    older_than_days: Annotated[int, Field(ge=1)] = 7,
                    max_files: Annotated[int, Field(ge=1, le=100_000)] = 1000,
                    only_above_percent: Annotated[int, Field(ge=0, le=100)] | None = None,
                    host: HostName | None = None) -> None:
    """Delete files under a folder that match cleaning rules and are older than N days.

    A file goes when it is a regular file under `path` on the same filesystem
    (`find -xdev`; symlinks are not followed), its name matches one of `patterns`
    (shell globs, e.g. `*.log.[0-9]*` for rotated logs) and it was last modified more
    than `older_than_days` days ago. The plan lists every file that would go, one
    command each; nothing else is touched. Each delete checks the file again (still a
    regular file, still old) at the moment it runs, so a file rewritten after the plan
    stays.

    Refuses system folders (`/`, `/etc`, `/usr`, `/var`, `/var/log` …) and more than
    `max_files` files (narrow the rules instead). With `only_above_percent`, it only
    acts when the filesystem is fuller than that. Deleted files cannot come back:
    there is no rollback, which is why the plan is exact.
    """
    on = where(ctx, host)
    before = on.run("df -P -k -- {{ path }}", readonly=True, check=True)
    found = on.run(FIND + " -print0", readonly=True, check=True)
    doomed = sorted(name for name in found.stdout.split("\0") if name)
    if len(doomed) > max_files:
        raise RuntimeError(f"{len(doomed)} files match, more than max_files={max_files}; "
                           f"narrow the patterns or raise max_files")
    ctx.note("files_to_delete", len(doomed))
    ctx.note("avail_kib_before", _avail_kib(before.stdout))
    for name in doomed:
        on.run("find {{ name }} -maxdepth 0 -type f -mtime +{{ older_than_days }} -delete",
               name=name, check=True)
    if not ctx.dry_run:
        after = on.run("df -P -k -- {{ path }}", readonly=True, check=True)
        ctx.note("kib_freed", _avail_kib(after.stdout) - _avail_kib(before.stdout))


def _avail_kib(df_output: str) -> int:
    """The ``Available`` column of ``df -P -k`` (the last line: long device names wrap)."""
    return int(df_output.strip().splitlines()[-1].split()[3])


@free_disk_space.precondition
def the_folder_is_safe_to_clean(ctx: Context, path: str, host: str | None) -> bool:
    """An existing directory (not a symlink to one) that is not a system folder."""
    if is_protected(path) or normalised(path) != path:
        raise ValueError(f"refusing to clean {path!r}: a system folder or not normalised")
    return where(ctx, host).run("test -d {{ path }} && test ! -L {{ path }}", readonly=True,
                                check=False).ok


@free_disk_space.precondition
def the_disk_is_under_pressure(ctx: Context, path: str, host: str | None,
                               only_above_percent: int | None) -> bool:
    """With ``only_above_percent``: the filesystem is fuller than that."""
    if only_above_percent is None:
        return True
    df = where(ctx, host).run("df -P -k -- {{ path }}", readonly=True, check=True)
    used = int(df.stdout.strip().splitlines()[-1].split()[4].rstrip("%"))
    if used <= only_above_percent:
        raise ValueError(f"{path} is {used}% full, not above {only_above_percent}%")
    return True


@free_disk_space.verify
def no_matching_old_file_is_left(ctx: Context, path: str, patterns: list[str],
                                 older_than_days: int, host: str | None) -> bool:
    left = where(ctx, host).run(FIND + " -print -quit", readonly=True, check=False)
    return left.ok and not left.stdout.strip()
