"""Optional extras (TorchRL, RLlib, SuperSuit, ...) in tests: skip locally, never skip in CI.

A developer without an extra installed runs the suite and sees the recipe tests skipped; `.ci/run`
installs every extra and sets HOMOECON_REQUIRE_EXTRAS=1, so there a missing extra is a failure.
Deselect the slow recipe tests locally with `python -m pytest -m "not recipe"`.
"""
import importlib
import os

import pytest


def import_extra(module: str, extra: str):
    """Import `module` from the optional extra `extra`, skipping the test when it is missing (a
    failure when HOMOECON_REQUIRE_EXTRAS=1)."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        if os.environ.get("HOMOECON_REQUIRE_EXTRAS") == "1":
            raise ImportError(f"{module} (extra [{extra}]) is required here (HOMOECON_REQUIRE_EXTRAS=1): "
                              f"pip install -e '.[{extra}]'") from error
        pytest.skip(f"{module} not installed: pip install -e '.[{extra}]'")


def load_example(stem: str):
    """The recipe examples/<stem>.py as a module named `stem`, registered in sys.modules (BenchMARL
    pickles its task class, which must then be importable by that name)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / f"{stem}.py"
    spec = importlib.util.spec_from_file_location(stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[stem] = module
    spec.loader.exec_module(module)
    return module
