"""Suite-wide settings: no wandb process, no network, deterministic CPU runs."""
import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
# The multi-threshold backward's compiled kernel costs seconds to compile in every process; the suite's tensors
# are small, so it runs the eager ops it equals, and tests/test_neurons.py checks the compiled kernel itself.
os.environ.setdefault("SPIKEDISTILL_COMPILE", "0")

# Under pytest-xdist (`make test` runs `-n auto`), the workers share the cores: each gets its share of intra-op
# threads instead of all of them, so that two workers on two cores do not oversubscribe.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

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


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A three-step quickstart fit with a tiny student and warm start (test_cli.TINY): its run folder."""
    from distill.cli import main
    from test_cli import TINY

    root = tmp_path_factory.mktemp("tiny_run") / "run"
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        main(["fit", "--config", "recipes/quickstart_hint.yaml", "--trainer.max_steps=3", "--trainer.val_check_interval=3",
              f"--trainer.default_root_dir={root}", *TINY])
    finally:
        os.chdir(cwd)
    return root
