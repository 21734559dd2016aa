"""Suite-wide settings: no wandb process, no network, deterministic CPU runs."""
import os

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def repo_root() -> str:
    """The repository root (recipes are given relative to it)."""
    return REPO
