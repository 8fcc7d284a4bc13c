"""Shared fixtures (a tiny BERT built from a config, a temp git + DVC copy of the repository) and
the `integration` marker: `pytest -m "not integration"` runs the fast unit tests only."""

from __future__ import annotations

from pathlib import Path

import pytest

# helpers sets the offline environment first: nothing in the tests may reach the network
from helpers import (  # noqa: F401  (re-exported for tests that still import them from conftest)
    FIXTURES,
    ROOT,
    build_tiny_model,
    dvc,
    head_params_after_peft_load,
    make_repo,
    run,
    tiny_params,
    write_params,
)

# modules whose tests run real `dvc repro` / `dvc exp run`, training or a storage emulator (minutes)
INTEGRATION_MODULES = {
    "test_pipeline",
    "test_experiments",
    "test_reliability",
    "test_remote",
    "test_registry",
    "test_sky",
    "test_distributed",
    "test_methods",
    "test_predict_export",
    "test_evaluate_report",
    "test_queue_per_device",
    "test_xla",
    "test_fresh_clone",
    "test_learning",
    "test_training",
    "test_checkpoints",
    "test_stage_deps",
}


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "integration: runs real pipelines or emulators (minutes); deselect with -m 'not integration'"
    )


# test files by their measured time, longest first (`pytest --durations`): xdist hands whole files to its
# workers in collection order (pytest.ini: --dist loadfile --no-loadscope-reorder), so the longest start
# first and the short ones fill in beside them, instead of a long file starting last and running alone
LONGEST_FIRST = (
    "test_queue_resume",
    "test_reliability",
    "test_experiments",
    "test_distributed",
    "test_methods",
    "test_remote",
    "test_checkpoints",
    "test_predict_export",
    "test_registry",
    "test_sky",
    "test_evaluate_report",
    "test_prepare",
    "test_stage_deps",
    "test_pipeline",
    "test_learning",
    "test_queue_per_device",
    "test_gpu_bench",
    "test_studies",
)


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if item.path.stem in INTEGRATION_MODULES or "repo" in item.fixturenames:
            item.add_marker(pytest.mark.integration)
    rank = {stem: i for i, stem in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture
def repo(tmp_path, tiny_model) -> Path:
    """A fresh git + DVC repository holding the project's tracked files, set up for the tiny model."""
    return make_repo(tmp_path / "repo", tiny_model)
