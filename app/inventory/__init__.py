"""The inventory: servers and their database entries (instances), schemas and validation,
import/export, database and cloud discovery, credential references.

May import app.models, app.db, app.findings and collectors.engines (Target, and connect for
database discovery's read-only listing); not the API.
"""
