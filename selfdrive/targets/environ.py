"""The environment a command's process gets: the team's allow-list, never the runner's own.

selfdrive's process may hold credentials (the receiver's bearer token, ``@env``
secrets, a cloud profile); a child inherits none of it unless the team names the
variable in ``[executor] env_allow`` (default ``DEFAULT_ENV_ALLOW`` in
``selfdrive.config.model``) or the runbook passes it for that one command.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping


def child_environ(allow: Iterable[str], extra: Mapping[str, str] | None = None,
                  *, source: Mapping[str, str] | None = None,
                  deny: Iterable[str] = ()) -> dict[str, str]:
    """The allowed variables of ``source`` (default: this process), plus ``extra``.

    ``deny`` names variables no pattern lets through (selfdrive's own credentials,
    such as the receiver's token, even under ``env_allow = ["*"]``).
    """
    source = os.environ if source is None else source
    patterns = list(allow)
    exact = {p for p in patterns if not any(c in p for c in "*?[")}
    globs = [p for p in patterns if p not in exact]
    denied = set(deny)
    env = {k: v for k, v in source.items() if k not in denied
           and (k in exact or any(fnmatch.fnmatchcase(k, g) for g in globs))}
    env.setdefault("PATH", os.defpath)
    if extra:
        env.update(extra)
    return env
