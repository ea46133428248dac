"""Log runbooks: rotate a runaway log without losing what it holds."""

from selfdrive import Context, Operand, Risk, runbook


@runbook(risk=Risk.MEDIUM, domain="host", lock="{{ path }}", timeout="5m", tags=["logs"])
def rotate_log(ctx: Context, path: Operand = "var/log/app.log", keep: int = 3) -> None:
    """Rotate a log file: compress a copy to PATH.1.gz, shift older copies, truncate it.

    The writer keeps its open file handle (copy-then-truncate), so no restart is
    needed. Copies beyond `keep` are removed.
    """
    for n in range(keep - 1, 0, -1):
        ctx.run("if [ -f {{ src }} ]; then mv -f -- {{ src }} {{ dst }}; fi",
                src=f"{path}.{n}.gz", dst=f"{path}.{n + 1}.gz", check=True)
    ctx.run("gzip -c -- {{ path }} > {{ archive }}", archive=f"{path}.1.gz", check=True)
    ctx.run(": > {{ path }}", check=True)


@rotate_log.precondition
def log_exists(ctx: Context, path: str) -> bool:
    return ctx.run("test -f {{ path }}", readonly=True, check=False).ok


@rotate_log.verify
def log_was_rotated(ctx: Context, path: str) -> bool:
    archive = ctx.run("gzip -t -- {{ archive }}", archive=f"{path}.1.gz", readonly=True,
                      check=False)
    size = ctx.run("stat -c %s -- {{ path }}", readonly=True, check=False)
    return archive.ok and size.ok and int(size.stdout.strip()) < 1024 * 1024


@rotate_log.rollback
def restore_log(ctx: Context, path: str) -> None:
    """Put the archived lines back if the rotation did not verify."""
    ctx.run("if [ -f {{ archive }} ]; then gzip -dc -- {{ archive }} >> {{ path }}; fi",
            archive=f"{path}.1.gz", check=True)
