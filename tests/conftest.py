from __future__ import annotations

from pathlib import Path

import pytest

from claidex.sample_data import generate


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated CMS-like dataset shared by the slower end-to-end tests."""
    directory = tmp_path_factory.mktemp("sample")
    generate(directory, providers=3000, seed=11)
    return directory
