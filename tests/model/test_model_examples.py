"""The examples in reg2rg_lib/model/__init__.py's docstring (the model stage's API) run and print what they
say."""

from __future__ import annotations

import doctest

import reg2rg_lib.model


def test_the_model_package_examples_run() -> None:
    result = doctest.testmod(reg2rg_lib.model, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 10  # the examples were found (a renamed docstring would silently test nothing)
    assert result.failed == 0
