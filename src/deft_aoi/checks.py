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
