"""captune: LoRA-adapt frozen BLIP-2 captioners and report honest, standard numbers."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("captune")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
