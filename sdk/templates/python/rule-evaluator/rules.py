"""componentize-py finds an exported resource's class in a module named after
its interface: the `rule-set` resource of interface `rules` is `rules.RuleSet`.
The class lives in app.py; this module only points at it."""

from app import RuleSet  # noqa: F401
