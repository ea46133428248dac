"""The built-in runbook library: production runbooks for common incidents.

A folder of runbook files, shipped inside the package. A team loads them with
``library = true`` in ``selfdrive.toml`` (they join the team's own runbooks, under
the team's policy); ``docs/library.md`` describes each one. Files starting with
``_`` are helpers, which the registry skips.
"""
