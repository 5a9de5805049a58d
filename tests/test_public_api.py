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


def test_the_served_example_plans_ship_inside_the_package(monkeypatch):
    # `langgraph up` installs fanfold from a wheel: the served plans must be package data.
    import fnmatch
    import tomllib
    from pathlib import Path

    import fanfold.serving as serving

    package = Path(fanfold.__file__).resolve().parent
    assert serving.EXAMPLES == Path(serving.__file__).parent / "_examples"
    root = package.parent.parent
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["fanfold"]
    shipped = [
        path.relative_to(package).as_posix()
        for path in (package / "_examples").rglob("*")
        if path.is_file()
        and any(fnmatch.fnmatch(path.relative_to(package).as_posix(), p) for p in patterns)
    ]
    for recipe in serving.RECIPES.values():
        assert f"_examples/{recipe}" in shipped, recipe
    # The data the recipes' documentation runs them on ships too.
    assert "_examples/data_processing/orders.csv" in shipped
    assert "_examples/document_analysis/incident_review.md" in shipped


def test_dependencies_that_broke_on_a_new_release_have_upper_bounds():
    import re
    import tomllib
    from pathlib import Path

    root = Path(fanfold.__file__).resolve().parent.parent.parent
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    bounded = {}
    for spec in config["project"]["dependencies"]:
        name = re.split(r"[<>=\[ ]", spec, maxsplit=1)[0]
        bounded[name] = "<" in spec
    for name in ("langgraph", "langchain-core", "langchain-openai", "openai"):
        assert bounded.get(name), name
    pinned = (root / "constraints.txt").read_text(encoding="utf-8")
    for name in ("langgraph", "langchain-core", "langchain-openai", "openai"):
        assert re.search(rf"^{name}==", pinned, re.M), name
