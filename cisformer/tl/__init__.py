"""Tools that read a trained model or the data: CRE-gene links (``attention``), cell-type regulators
(``regulators``), enrichment tests (``enrichment``), motif scanning (``motifs``) and EpiTrace ages (``epitrace``)."""
from .. import lazy_modules

__getattr__, __dir__ = lazy_modules(__name__, ("attention", "enrichment", "epitrace", "motifs", "regulators"))
