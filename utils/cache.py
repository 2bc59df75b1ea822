"""Where downloaded and derived files are cached: $MASKDIT_CACHE, default ~/.cache/maskdit."""

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("MASKDIT_CACHE", Path.home() / ".cache" / "maskdit"))
