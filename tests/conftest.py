"""Suite-wide settings: no wandb process, no network, deterministic CPU runs."""
import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def repo_root() -> str:
    """The repository root (recipes are given relative to it)."""
    return REPO


@pytest.fixture
def single_thread():
    """One intra-op thread: tiny tensors run faster and steadier on a shared machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
