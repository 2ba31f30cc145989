"""The run's types and pure decisions, without I/O.

``outcome.decide`` turns every input that decides how a run ends into its status, exit code
and note; ``gate.may_start`` says whether another job may start; ``promise`` states each
mode's freshness promise; ``stop`` holds a request to stop. Imports config and the root.
"""
