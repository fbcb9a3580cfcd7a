"""The error every data check raises: it names the file, the field and the fix."""
from __future__ import annotations


class InputError(ValueError):
    """Bad input data; the message names the file, the field and the fix."""


def input_error(source, field: str, problem: str, fix: str) -> InputError:
    return InputError(f"{source}: field '{field}': {problem}. Fix: {fix}")
