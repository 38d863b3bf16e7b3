"""gpu-pricer: European options and their Greeks on the GPU or the CPU.

Public names: `price`, `implied_vol`, `backends`, `ERRORS`, `ErrorCode`, `GREEKS`, `MODELS`.
Books in Arrow tables (pricing, aggregation, scenarios): `gpu_pricer.book`; in dask
DataFrames: `gpu_pricer.dask`; the ``gpu-pricer`` command: `gpu_pricer.cli`.
"""

from .dispatch import BackendStatus, backends
from .errors import ERRORS, ErrorCode
from .inputs import GREEKS as _GREEK_CODES
from .inputs import MODELS as _MODEL_CODES
from .pricing import price
from .volatility import implied_vol

__version__ = "0.1.0"

#: Every Greek `price` computes, in output order.
GREEKS: tuple[str, ...] = tuple(_GREEK_CODES)
#: The models `price` accepts.
MODELS: tuple[str, ...] = tuple(_MODEL_CODES)

__all__ = ["ERRORS", "GREEKS", "MODELS", "BackendStatus", "ErrorCode", "backends", "implied_vol",
           "price"]
