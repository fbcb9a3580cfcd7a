"""The methods Cisformer is compared with: in-house baselines (``baselines``), external tools run in their own
environments (``external``, drivers in ``drivers/``) and the benchmark that runs every method alike (``benchmark``)."""
from .. import lazy_modules

__getattr__, __dir__ = lazy_modules(__name__, ("baselines", "benchmark", "external"))
