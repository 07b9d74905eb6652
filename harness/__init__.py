"""clusterbench: a plugin-based benchmark harness for deep image clustering.

The public API a plugin needs is re-exported here; the harness core imports no method
or dataset by name: it finds them through the ``clusterbench`` entry-point group.
"""

from clusterbench.api import ConfigError, DataError, Dataset, ImageData, Method, param
from clusterbench.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "Dataset",
    "ImageData",
    "Method",
    "param",
    "hookimpl",
    "__version__",
]
