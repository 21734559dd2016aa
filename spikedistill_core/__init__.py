"""The leaf of spikedistill's package graph: what every package (``students``, ``teachers``, ``distill``) may
import, and which imports none of them (the import-linter contracts in pyproject.toml enforce it).

* :mod:`spikedistill_core.errors`: the framework's exceptions.
* :mod:`spikedistill_core.checks`: the argument checks (integers, numbers in a range) that raise them.
"""
