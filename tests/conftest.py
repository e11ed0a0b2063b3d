from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
VIDEOS = SHARED / "data" / "videos"
CONFIGS = SHARED / "data" / "configs"
SD15 = SHARED / "sd15"


def need_shared(path: Path) -> Path:
    """Skip the calling test when ../shared (present in CI, absent in a user's clone) lacks ``path``."""
    if not path.exists():
        pytest.skip(f"{path} is not here: the example data lives in ../shared beside the checkout")
    return path
