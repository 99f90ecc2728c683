"""Every function in template.yaml points at a handler that exists, as Lambda would load it."""

from __future__ import annotations

import importlib.util
import sys


def test_every_function_handler_resolves_to_a_callable(functions, function_logical_id, repo_root, monkeypatch):
    # Given a function's CodeUri and Handler ("app.lambda_handler" -> functions/<dir>/app.py, lambda_handler)
    properties = functions[function_logical_id]
    code_dir = repo_root / properties["CodeUri"]
    module_path, _, attribute = properties["Handler"].rpartition(".")
    source = code_dir / (module_path.replace(".", "/") + ".py")
    assert source.is_file(), f"{function_logical_id}: Handler {properties['Handler']!r} has no file {source}"

    # When that file is loaded as a module of its own (a unique name, so the functions' app.py never collide)
    module_name = f"smsinvite_fn_{code_dir.name}"
    spec = importlib.util.spec_from_file_location(module_name, source)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, module_name, module)  # dataclasses and typing look modules up here
    spec.loader.exec_module(module)

    # Then the handler it names is callable
    handler = getattr(module, attribute, None)
    assert callable(handler), f"{function_logical_id}: {source.name} has no callable {attribute!r}"
