"""The inventory: instance schemas and validation, import/export, credential references.

May import app.models, app.db and collectors.engines (for Target); not the API.
"""
