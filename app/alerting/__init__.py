"""The alert router: outbox → alerts → routing tree → groups → silence/inhibit/mute → dedup → sinks.

Alertmanager's semantics (dispatch/route.go, notify/notify.go) with every piece of state in the
store, so any number of dispatchers can run and a restart loses nothing. May import app.models,
app.db, app.settings, app.telemetry and app.inventory.credentials; never the API.
"""
