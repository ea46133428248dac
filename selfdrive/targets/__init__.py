"""Where commands run: the local shell (SSH and Ansible arrive with the remote-targets work)."""

from selfdrive.targets.base import Target
from selfdrive.targets.local import LocalTarget

__all__ = ["LocalTarget", "Target"]
