"""A function run in a background thread whose result (or exception) the caller collects."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Background(Generic[T]):
    """Runs ``fn`` in a daemon thread from construction; :meth:`result` waits for it and
    returns its value or re-raises its exception in the caller's thread."""

    def __init__(self, fn: Callable[[], T], name: str):
        self._fn = fn
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._fn()
        except BaseException as exc:  # noqa: BLE001 - handed to result()
            self._error = exc

    @property
    def failed(self) -> bool:
        """True once ``fn`` has raised (without waiting for it)."""
        return self._error is not None

    def join(self) -> None:
        """Wait for ``fn`` to finish, without collecting its outcome."""
        self._thread.join()

    def result(self) -> T | None:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value
