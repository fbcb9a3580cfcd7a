"""What the peer method Attune adds: contrastive RNA-ATAC alignment and its ATAC -> RNA head (``alignment``), the
regulatory attention layer (``regulatory``), chromatin potential (``potential``) and the training loop they share
(``training``)."""
from .. import lazy_modules

__getattr__, __dir__ = lazy_modules(__name__, ("alignment", "potential", "regulatory", "training"))
