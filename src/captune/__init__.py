"""captune: LoRA-adapt frozen BLIP-2 captioners and report honest, standard numbers.

The stages are functions here (`captune.load_config`, `captune.finetune`, `captune.caption`,
`captune.evaluate`, `captune.run`, `captune.score`, `captune.write_report`, `captune.synthesize`), loaded on
first use so that `import captune` stays light (torch and transformers load only when a stage runs).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("captune")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+local"

API = ("load_config", "finetune", "caption", "evaluate", "run", "score", "write_report", "synthesize")
__all__ = ["__version__", *API]


def __getattr__(name: str) -> Any:
    if name in API:
        from captune import api

        return getattr(api, name)
    raise AttributeError(f"module 'captune' has no attribute {name!r}")
