"""Keep secrets out of everything that is stored or shown, and bound what is stored."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import SecretStr

from selfdrive.sdk.command import MASK, known_secrets, mask_secrets, secret_values


class Redactor:
    """Replaces every known secret value in text with the mask.

    One redactor serves a whole run (plan, body, hooks, error messages), so a secret it
    learns on the way (a ``SecretStr`` handed to one command) is masked everywhere after.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = known_secrets(secrets)

    @property
    def secrets(self) -> list[str]:
        return list(self._secrets)

    @classmethod
    def for_params(cls, values: Mapping[str, Any]) -> Redactor:
        return cls(secret_values(values.values()))

    def learn(self, values: Iterable[Any]) -> None:
        """Know the ``SecretStr`` among ``values`` too (e.g. a command's own variables)."""
        found = secret_values(values)
        if found and not set(found) <= set(self._secrets):
            # One assignment: threads of a fan-out read the tuple, never a half-built one.
            self._secrets = known_secrets([*self._secrets, *found])

    def __call__(self, text: str | None) -> str | None:
        if text is None or not self._secrets:
            return text
        return mask_secrets(text, self._secrets)

    def deep(self, value: Any) -> Any:
        """Redact strings inside JSON-like data; anything else is stored as its text
        (as the journal would store it), so it is redacted as text."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, SecretStr):
            return MASK
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, Mapping):
            return {self.deep(k) if isinstance(k, str) else k: self.deep(v)
                    for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.deep(v) for v in value]
        return self(str(value))


def bound(text: str, limit: int) -> tuple[str, bool]:
    """Keep the head and tail of ``text`` within ``limit`` characters; say if cut."""
    if len(text) <= limit:
        return text, False
    half = limit // 2
    cut = len(text) - 2 * half
    return f"{text[:half]}\n… [{cut} characters cut] …\n{text[-half:]}", True
