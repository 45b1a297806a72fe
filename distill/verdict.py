"""The verdict every check returns: a pure function `(record) -> Verdict`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Verdict:
    """`ok` True (passes), False (fails, `reason` names why) or None (cannot be decided).

    Reason names are the vocabulary of filter reports: wrong_answer, no_answer,
    unverifiable_reference, verify_timeout, truncated, language_mixing, ...
    """

    ok: bool | None
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "reason": self.reason, **self.details}


def passed(**details: Any) -> Verdict:
    return Verdict(True, None, details)


def failed(reason: str, **details: Any) -> Verdict:
    return Verdict(False, reason, details)


def undecided(reason: str, **details: Any) -> Verdict:
    return Verdict(None, reason, details)
