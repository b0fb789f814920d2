"""The one place the SDK reaches the generated bindings.

componentize-py generates a ``wit_world`` package for the world a plugin is
built for. The SDK imports it here, lazily, at call time, for two reasons:

- ``import cohort_sdk`` works before any bindings exist (in a test, before
  ``cohort_sdk.testing.load_bindings`` has put them on ``sys.path``);
- every host call looks the function up on ``wit_world.imports.host`` when it
  is made, so ``cohort_sdk.testing.FakeHost`` can replace ``send_http``,
  ``log`` and ``now_millis`` there, and a plugin that calls ``host.log``
  directly sees the fake too.

Only the interfaces of the world being built exist: ``exports.importer`` in
an importer, ``exports.idp`` in a connector, ``exports.rules`` in an evaluator.
"""

import importlib


def host():
    """``wit_world.imports.host``."""
    return importlib.import_module("wit_world.imports.host")


def types():
    """``wit_world.imports.types``."""
    return importlib.import_module("wit_world.imports.types")


def export(interface):
    """``wit_world.exports.<interface>`` (``importer``, ``idp`` or ``rules``)."""
    return importlib.import_module("wit_world.exports." + interface)


def Err():
    """``componentize_py_types.Err``, the exception that carries a WIT error."""
    return importlib.import_module("componentize_py_types").Err


def err(value):
    """``Err(value)``, ready to raise."""
    return Err()(value)
