"""What the peer method Attune adds: contrastive RNA-ATAC alignment and its ATAC -> RNA head (``alignment``), the
regulatory attention layer (``regulatory``) and chromatin potential (``potential``)."""
from .. import lazy_modules

__getattr__, __dir__ = lazy_modules(__name__, ("alignment", "potential", "regulatory"))
