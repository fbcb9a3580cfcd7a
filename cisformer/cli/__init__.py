"""Command-line interface: ``cisformer preprocess | train | predict | link`` (also ``python -m cisformer``).

Every subcommand mirrors a Python function (``cisformer.train.fit``, ``cisformer.predict.rna_to_atac`` /
``atac_to_rna``, ``cisformer.tl.attention.links``) and reads paired AnnData files (``.h5ad``), one MuData file
(``.h5mu`` with modalities ``rna`` and ``atac``), a folder written by ``preprocess``, or a shipped data set by
name. Bad input ends in one ``error: FILE: field 'FIELD': problem. Fix: ...`` line, never a traceback, and outputs
are written under a temporary name and renamed, so an interrupted command leaves no partial file. ``inputs``:
what a command reads; ``commands``: the four commands; ``parser``: their options.
"""
from __future__ import annotations

from .parser import EXAMPLES, build_parser

__all__ = ["EXAMPLES", "build_parser", "main"]


def main(argv=None) -> int:
    """Run the ``cisformer`` command line; returns 0, errors exit through SystemExit with one ``error: ...`` line.

    Parameters
    ----------
    argv
        The arguments without the program name (list of str); default None: ``sys.argv[1:]``.
    """
    args = build_parser().parse_args(argv)
    args.func(args)
    return 0

