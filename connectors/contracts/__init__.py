"""The data contracts the product ships with (package data, read through ``importlib.resources``).

``incident.schema.json`` is a copy of the project's shared incident contract
(``shared/contracts/incident.schema.json``); a test keeps the two equal.
"""
