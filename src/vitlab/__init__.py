"""vitlab: controlled studies of compact vision transformers."""
from .config import RunConfig, load_config

__version__ = "0.1.0"
__all__ = ["RunConfig", "load_config", "__version__"]
