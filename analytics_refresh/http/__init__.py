"""The requests the runner sends: the refresh call (bounded in time and size, each answer
classified), the checklist's probes, heartbeat pings and Pushgateway pushes, all through
transport's watchdog.

Imports store (the plan's jobs), model, config and the root.
"""
