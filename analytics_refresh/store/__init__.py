"""PostgreSQL: connections whose every call is bounded, every statement (with sql/), writing
the run's record, reading the state, key claims, the change query run read-only, pruning.

The database boundary: a driver error leaves it as the project's DatabaseError. Imports
model, config and the root.
"""
