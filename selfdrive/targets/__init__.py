"""Where commands run: the local shell, SSH hosts (one or fanned out), Ansible playbooks.

paramiko and ansible-runner are imported only when a remote target first connects or
a playbook runs, so importing this package stays cheap.
"""

from selfdrive.targets.ansible import AnsibleEvent, Change, PlaybookResult, run_playbook
from selfdrive.targets.base import Target
from selfdrive.targets.fanout import FanoutResult, HostRun, fan_out
from selfdrive.targets.inventory import HostSpec, Inventory, UnknownHostError
from selfdrive.targets.local import LocalTarget
from selfdrive.targets.ssh import SshTarget, never_started, outcome_unknown

__all__ = ["AnsibleEvent", "Change", "FanoutResult", "HostRun", "HostSpec", "Inventory",
           "LocalTarget", "PlaybookResult", "SshTarget", "Target", "UnknownHostError",
           "fan_out", "never_started", "outcome_unknown", "run_playbook"]
