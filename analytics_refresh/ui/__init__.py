"""Terminal rendering with rich: status tables, the checklist, progress.

Imported only by the commands a person reads (ops); never by run/ or listen/.
"""
