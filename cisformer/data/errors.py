"""The error every data check raises: it names the file, the field and the fix."""
from __future__ import annotations


class InputError(ValueError):
    """Bad input data; the message names the file, the field and the fix.

    Parameters
    ----------
    message
        The text, as :func:`input_error` builds it.
    """


def input_error(source, field: str, problem: str, fix: str) -> InputError:
    """The :class:`InputError` every data check raises: ``"<source>: field '<field>': <problem>. Fix: <fix>"``.

    Parameters
    ----------
    source
        File (path or name) the bad input came from.
    field
        Field of that input that is wrong, e.g. ``"X"`` or ``"obs_names (barcodes)"``.
    problem
        What is wrong (no final full stop).
    fix
        What the user should do about it.

    Returns
    -------
    :class:`InputError`, for the caller to raise.
    """
    return InputError(f"{source}: field '{field}': {problem}. Fix: {fix}")
