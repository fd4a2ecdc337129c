"""Fixtures for the cloud collector tests; the servers themselves live in cloud_fakes.py."""

from __future__ import annotations

from cloud_fakes import azure_credential, azure_monitor, fault_proxy, moto_url  # noqa: F401
