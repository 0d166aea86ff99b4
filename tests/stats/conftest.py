"""The statistics tests' reference implementations."""
from __future__ import annotations

import gc

import pytest


@pytest.fixture
def statsmodels_holm(monkeypatch):
    """statsmodels' Holm-adjusted p-values of one family. `multipletests` calls `gc.collect()` on every
    call, about 0.3 s in a test worker that holds models; that collection changes no result."""
    from statsmodels.stats import multitest  # a test dependency (pyproject [test])
    monkeypatch.setattr(gc, "collect", lambda *args: 0)
    return lambda p: multitest.multipletests(p, method="holm")[1]
