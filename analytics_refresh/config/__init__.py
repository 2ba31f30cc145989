"""The settings: one object read once from the environment and .env, loud on bad values.

Also the rules that follow from them (which database a command may use, the schedule's
interval, the lease's length) and near-misses of the variables' names. Imports only the
root modules (errors, text).
"""
