"""The public surface: one flat, sorted `__all__`, typed, and errors rooted in FanfoldError."""

from __future__ import annotations

import importlib.resources
import inspect

import fanfold


def test_all_is_sorted():
    assert fanfold.__all__ == sorted(fanfold.__all__)


def test_all_has_no_duplicates():
    assert len(fanfold.__all__) == len(set(fanfold.__all__))


def test_every_name_in_all_exists():
    missing = [name for name in fanfold.__all__ if not hasattr(fanfold, name)]
    assert missing == []


def test_star_import_gives_exactly_all():
    namespace: dict[str, object] = {}
    exec("from fanfold import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(fanfold.__all__)


def test_public_classes_and_functions_are_not_left_out_of_all():
    public = {
        name
        for name, value in vars(fanfold).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", "").startswith("fanfold")
    }
    assert public <= set(fanfold.__all__)


def test_every_exported_error_is_a_fanfold_error():
    errors = [
        getattr(fanfold, name)
        for name in fanfold.__all__
        if name.endswith("Error") and inspect.isclass(getattr(fanfold, name))
    ]
    assert len(errors) >= 10
    for error in errors:
        assert issubclass(error, fanfold.FanfoldError), error
        # Every error was a ValueError before the branches existed; all but the events
        # file's (an OSError) still are.
        allowed = (fanfold.FanfoldError, fanfold.EventsFileError)
        assert issubclass(error, ValueError) or error in allowed, error


def test_py_typed_ships_with_the_package():
    assert importlib.resources.files("fanfold").joinpath("py.typed").is_file()


def test_version_is_exported():
    assert isinstance(fanfold.__version__, str)
    assert fanfold.__version__.count(".") >= 1
