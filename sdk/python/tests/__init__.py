"""The Python SDK's tests. Run from the repository root:

    python3 -m unittest discover -s sdk/python/tests -t sdk/python

(or from sdk/python: python3 -m unittest discover -s tests -t .)

Importing this package generates componentize-py's stub bindings for all
three worlds merged (cohort_sdk.testing.ALL_WORLDS) from the repository's
wit/ folder and puts them on sys.path, so one process can test the importer,
connector and evaluator helpers.
"""

from pathlib import Path

from cohort_sdk.testing import load_bindings

WIT = Path(__file__).resolve().parents[3] / "wit" / "cohort-plugin@0.1.0"
BINDINGS = load_bindings(wit=WIT)
