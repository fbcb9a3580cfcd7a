"""Infrastructure: repository paths and atomic writes (``paths``), matrix helpers (``matrix``), progress bars
(``progress``), provenance records (``provenance``), process groups (``distributed``) and ``--verify``
(``verify``)."""
from .. import lazy_modules

__getattr__, __dir__ = lazy_modules(__name__, ("distributed", "matrix", "paths", "progress", "provenance", "verify"))
