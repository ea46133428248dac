"""Keep secrets out of everything that is stored or shown, and bound what is stored."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import SecretStr

from selfdrive.sdk.command import MASK


class Redactor:
    """Replaces every known secret value in text with the mask."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    @property
    def secrets(self) -> list[str]:
        return list(self._secrets)

    @classmethod
    def for_params(cls, values: Mapping[str, Any]) -> Redactor:
        return cls(_secret_values(values.values()))

    def __call__(self, text: str | None) -> str | None:
        if text is None or not self._secrets:
            return text
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def deep(self, value: Any) -> Any:
        """Redact strings inside JSON-like data."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, SecretStr):
            return MASK
        if isinstance(value, Mapping):
            return {k: self.deep(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.deep(v) for v in value]
        return value


def _secret_values(values: Iterable[Any]) -> list[str]:
    out: list[str] = []
    for value in values:
        if isinstance(value, SecretStr):
            out.append(value.get_secret_value())
        elif isinstance(value, list | tuple):
            out.extend(_secret_values(value))
    return out


def bound(text: str, limit: int) -> tuple[str, bool]:
    """Keep the head and tail of ``text`` within ``limit`` characters; say if cut."""
    if len(text) <= limit:
        return text, False
    half = limit // 2
    cut = len(text) - 2 * half
    return f"{text[:half]}\n… [{cut} characters cut] …\n{text[-half:]}", True
