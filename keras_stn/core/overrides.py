"""Per-thread settings that a `with` block overrides and then restores."""

import contextlib


@contextlib.contextmanager
def overridden(state, name, value):
    """`state.name = value` for the block, the previous value (or None)
    restored after it; `state` is a `threading.local`."""
    previous = getattr(state, name, None)
    setattr(state, name, value)
    try:
        yield
    finally:
        setattr(state, name, previous)
