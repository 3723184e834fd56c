"""The chaos suite: many sagas through crashes, checked against the participants' own ledgers.

`make chaos` (or `python -m benchmarks.chaos --count 500`) starts a 3-broker cluster, 3 workers
and the example participants wrapped so that they keep a ledger (`ledger.py`), runs sagas of the
three example types with mixed outcomes (`plan.py`) at a steady rate while it kills workers,
a broker and the participants (`run.py`), then checks every saga's final status against the
ledgers and prints the figures (`check.py`). `tests/integration/test_chaos.py` runs a small one.
"""
