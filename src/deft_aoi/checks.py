"""One pre-flight check result; shared by workspace checks and backend hooks."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

CheckStatus = Literal["pass", "fail", "warn", "skip"]


class CheckResult(BaseModel):
    name: str
    status: CheckStatus
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "fail"


def passed(name: str, detail: str = "") -> CheckResult:
    return CheckResult(name=name, status="pass", detail=detail)


def failed(name: str, detail: str) -> CheckResult:
    return CheckResult(name=name, status="fail", detail=detail)


def warned(name: str, detail: str) -> CheckResult:
    return CheckResult(name=name, status="warn", detail=detail)


def skipped(name: str, detail: str) -> CheckResult:
    return CheckResult(name=name, status="skip", detail=detail)


# Names of the pre-flight rows that the validate stage cites when its last-line leakage check fires.
HYGIENE_CHECK = "pool hygiene (leaks excluded from mining)"
TRAINING_LEAK_CHECK = "training set vs validation/KPI"
