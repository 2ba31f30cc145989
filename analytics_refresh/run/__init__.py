"""One refresh run: the claim on its ground (lock, lease, record), the plan's order and
change decisions, the jobs with their retries and adaptive limit, and its end.

Imports http, store, model, config and the root; never ui.
"""
