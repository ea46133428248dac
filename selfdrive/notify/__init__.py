"""Notifications: webhook messages when approvals are requested, decided or expire."""

from selfdrive.notify.webhook import Notifier

__all__ = ["Notifier"]
