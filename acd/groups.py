"""Exceptions out of Trio nurseries: the error an operator should read, found in a group."""

from __future__ import annotations


def find_exception(error: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """`error` itself if it is one of `kinds`, else the first such exception nested in it."""
    if isinstance(error, kinds):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = find_exception(inner, kinds)
            if found is not None:
                return found
    return None
