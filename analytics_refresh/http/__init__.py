"""The requests the runner sends: the refresh call (bounded in time and size, each answer
classified), heartbeat pings and Pushgateway pushes, all through transport's watchdog.

Imports store (the plan's jobs), model, config and the root.
"""
