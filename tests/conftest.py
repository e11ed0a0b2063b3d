from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
VIDEOS = SHARED / "data" / "videos"
CONFIGS = SHARED / "data" / "configs"
SD15 = SHARED / "sd15"


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The tests' models are tiny: one thread is as fast, and immune to a busy machine's spin-waits."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def need_shared(path: Path) -> Path:
    """Skip the calling test when ../shared (present in CI, absent in a user's clone) lacks ``path``."""
    if not path.exists():
        pytest.skip(f"{path} is not here: the example data lives in ../shared beside the checkout")
    return path


@pytest.fixture
def sd15_unet_config():
    """SD 1.5's UNet config: the package's shipped copy."""
    from diffusers import UNet2DConditionModel

    shipped = Path(__file__).resolve().parents[1] / "src" / "tuneavideo" / "configs" / "sd15" / "unet"
    folder = shipped if shipped.is_dir() else need_shared(SD15 / "unet")
    return UNet2DConditionModel.load_config(folder)
