"""What every stage's entry point shares: a clear message and exit code for a bad setup."""

from __future__ import annotations

import sys
from typing import Callable, Sequence

from .contract import ContractError
from .data import UnknownVersion

# A misconfigured stage is a crash (retried up to backoffLimit), never a failed check.
EXIT_MISCONFIGURED = 2


def run(main: Callable[[Sequence[str] | None], int]) -> None:
    try:
        code = main(None)
    except (ContractError, UnknownVersion) as e:
        print(f"error: {e}", file=sys.stderr)
        code = EXIT_MISCONFIGURED
    sys.exit(code)
