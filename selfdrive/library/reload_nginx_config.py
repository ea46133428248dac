"""Install a new nginx-style config: validate, reload, check, and roll back to the old file."""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

from selfdrive import Context, Operand, Risk, runbook
from selfdrive.library._common import SCRIPT, AbsPath, HostName, is_protected, where

Url = Annotated[Operand, StringConstraints(pattern=r"^https?://[^\s]+$")]
VALIDATE = 'nginx -t -q -c "$1"'
RELOAD = 'nginx -s reload'


@runbook(risk=Risk.MEDIUM, domain="web", lock="config:{{ host or 'local' }}:{{ config_path }}",
         timeout="10m", tags=["library", "nginx", "config"])
def reload_nginx_config(ctx: Context, config_path: AbsPath, new_config: AbsPath,
                        validate_command: str = VALIDATE, reload_command: str = RELOAD,
                        health_url: Url | None = None, health_command: str | None = None,
                        host: HostName | None = None) -> None:
    """Replace a server's config file with a new one, reload, and roll back if it misbehaves.

    1. Precondition: `validate_command` (default `nginx -t -q -c "$1"`, with `$1` the
       file) accepts the candidate `new_config` as it is, before anything changes.
    2. The live file is copied to `CONFIG.selfdrive-prev`, the candidate is copied
       over it (the live file keeps its owner and mode), the live file is validated
       again where it lives, and `reload_command` (default `nginx -s reload`) runs.
    3. Verification, from the outside: the live file is the candidate, it validates,
       and `health_url` answers 2xx/3xx / `health_command` exits 0 (5 tries, 1 s
       apart).
    4. Rollback (a failed step or verification): if the live file is the candidate,
       the saved copy goes back and the server reloads again. It never restores a
       stale copy over a file this run did not replace.

    Works for any server with a "check this file" and a "reload" command: pass those
    as `validate_command` and `reload_command` (shell code: set them by hand, never
    from alert labels).
    """
    on = where(ctx, host)
    saved = f"{config_path}.selfdrive-prev"
    on.run("cp -p -- {{ config_path }} {{ saved }}", saved=saved, check=True)
    on.run("cp -- {{ new_config }} {{ config_path }}", check=True)
    if not ctx.dry_run:  # in a plan the live file is still the old one: nothing to learn
        on.run(SCRIPT, script=validate_command, arg=config_path, readonly=True, check=True)
    on.run(SCRIPT, script=reload_command, arg=config_path, check=True)


@reload_nginx_config.precondition
def the_candidate_is_valid(ctx: Context, config_path: str, new_config: str,
                           validate_command: str, host: str | None) -> bool:
    """Both files exist, and the candidate passes validation as it is."""
    if is_protected(config_path) or config_path == new_config:
        raise ValueError("config_path must be a file, other than new_config")
    on = where(ctx, host)
    if not on.run("test -f {{ config_path }} && test -f {{ new_config }}", readonly=True,
                  check=False).ok:
        raise ValueError(f"{config_path} or {new_config} is not a file")
    return on.run(SCRIPT, script=validate_command, arg=new_config, readonly=True, check=False).ok


@reload_nginx_config.verify(attempts=5, interval="1s")
def the_new_config_serves(ctx: Context, config_path: str, new_config: str,
                          validate_command: str, health_url: str | None,
                          health_command: str | None, host: str | None) -> bool:
    on = where(ctx, host)
    if not on.run("cmp -s -- {{ config_path }} {{ new_config }}", readonly=True, check=False).ok:
        return False
    if not on.run(SCRIPT, script=validate_command, arg=config_path, readonly=True, check=False).ok:
        return False
    if health_url is not None and not on.run(
            "curl -fsS -o /dev/null --max-time 5 {{ health_url }}", readonly=True, check=False).ok:
        return False
    return health_command is None or on.run(SCRIPT, script=health_command, arg=config_path,
                                            readonly=True, check=False).ok


@reload_nginx_config.rollback
def put_the_old_config_back(ctx: Context, config_path: str, new_config: str,
                            reload_command: str, host: str | None) -> None:
    """Restore the saved file and reload, only if this run's candidate is in place."""
    on = where(ctx, host)
    saved = f"{config_path}.selfdrive-prev"
    installed = on.run("cmp -s -- {{ config_path }} {{ new_config }} && test -f {{ saved }}",
                       saved=saved, readonly=True, check=False)
    if not installed.ok and not ctx.dry_run:
        ctx.log("the candidate is not in place: nothing to restore")
        return
    on.run("cp -p -- {{ saved }} {{ config_path }}", saved=saved, check=True)
    on.run(SCRIPT, script=reload_command, arg=config_path, check=True)
