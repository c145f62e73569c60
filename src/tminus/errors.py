"""The tminus exception tree. Every error carries the exit code the CLI gives it.

TminusError                      exit 1 unless a subclass says otherwise
├── PlanError                    exit 2: the plan or the command line is wrong
│   └── ResolveFailed            exit 2: a variable, env var or file cannot be resolved
├── StoreError                   exit 1: the state store cannot be used
│   └── NotFound                 exit 2: no such deploy
├── LockHeld                     exit 4: another deploy holds the (plan, environment) lock
├── NotResumable                 exit 2: the deploy is in a state that cannot be resumed so
└── StepFailed                   exit 1: a step failed; carries the result that caused it
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "LockHeld",
    "NotFound",
    "NotResumable",
    "PlanError",
    "PreflightFailed",
    "ResolveFailed",
    "StepFailed",
    "StoreError",
    "TminusError",
]


class TminusError(Exception):
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class PlanError(TminusError):
    exit_code = 2


class ResolveFailed(PlanError):
    pass


class StoreError(TminusError):
    exit_code = 1


class NotFound(StoreError):
    exit_code = 2


class LockHeld(TminusError):
    exit_code = 4

    def __init__(self, message: str, holder: dict[str, Any] | None = None) -> None:
        super().__init__(message, hint="wait for it, or take a stale lock with --force-unlock")
        self.holder = holder or {}


class NotResumable(TminusError):
    exit_code = 2


class PreflightFailed(TminusError):
    exit_code = 2


class StepFailed(TminusError):
    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result
