"""The listener: the run's job path, woken by the database when a key's data changes.

``refresh_requests`` is the durable record of what changed; a NOTIFY on the
``analytics_refresh`` channel is only a wake-up, and a poll is the net. Keys are claimed one
at a time in ``refresh_claims`` under a lease, so several listeners and the scheduled run
share them without refreshing one key twice at once. Imports the run's modules, never the
terminal interface or the reference API.
"""
