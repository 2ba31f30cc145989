"""The commands around the run: ``process`` (every command's one way through), check,
status, the metrics, the manual run and the demo.

May import every layer below it, ui included.
"""
