"""The REST API: one router module per resource, shared dependencies in deps.py.

Routes are thin: validate, query, commit at the request boundary. May import app.* and collectors.
"""
