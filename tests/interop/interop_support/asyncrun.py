"""Running `async def` tests without a pytest plugin."""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
from typing import Any

# Bound of one whole test body (each wait inside has its own, shorter bound).
TEST_TIMEOUT = float(os.environ.get("ZKFIRE_INTEROP_TEST_TIMEOUT", "120"))


def async_test(fn):
    """Run an `async def` test in a fresh event loop, bounded by TEST_TIMEOUT.

    Fixtures are resolved by pytest as usual (the wrapper keeps the signature).
    """
    if not inspect.iscoroutinefunction(fn):
        raise TypeError("async_test needs an async function")

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        async def bounded() -> None:
            try:
                async with asyncio.timeout(TEST_TIMEOUT) as scope:
                    await fn(*args, **kwargs)
            except TimeoutError:
                if scope.expired():
                    raise AssertionError(f"test did not finish within {TEST_TIMEOUT:.0f} s") from None
                raise

        asyncio.run(bounded())

    return run
