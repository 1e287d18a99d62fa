"""An example study kind, ``count``: the parameters of each mechanism at one width.

It is the smallest complete kind, and the one docs/kinds.md walks through. It lives in its own
folder (this package: ``schema.py``, ``kind.py``, ``report.py``) and is registered by one line,
``attnbench.kind.register_kind("count", "tests.example_kind")``; nothing else in attnbench names it.
tests/test_example_kind.py runs it through ``attnbench run``, ``attnbench report`` and
``attnbench schema``.
"""
