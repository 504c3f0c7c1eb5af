"""Where alerts go: the log always, and a webhook (``CHURN_ALERT_WEBHOOK``) when one is configured."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import dagster as dg
from pydantic import Field


class AlertDeliveryError(Exception):
    """The webhook did not accept an alert."""


class AlertWebhook(dg.ConfigurableResource):
    """Posts JSON alerts to ``CHURN_ALERT_WEBHOOK``; without a URL, alerts are only logged."""

    url: str | None = Field(
        default=None,
        description="URL that alerts (failed runs, late landing days) are POSTed to as JSON (CHURN_ALERT_WEBHOOK).",
    )
    timeout_seconds: float = Field(default=5.0, description="How long one POST may take; a slow webhook must not stall the sensor.")

    @property
    def enabled(self) -> bool:
        return bool(self.post_url)

    @property
    def post_url(self) -> str:
        """The URL alerts go to: ``url`` without the spaces a dg.EnvVar keeps (the settings strip them)."""
        return (self.url or "").strip()

    def post(self, payload: dict[str, Any]) -> int:
        """POST ``payload`` as JSON; returns the HTTP status, raises AlertDeliveryError when it fails."""
        if not self.post_url:
            raise AlertDeliveryError("no alert webhook is configured (CHURN_ALERT_WEBHOOK)")
        request = urllib.request.Request(
            self.post_url,
            data=json.dumps(payload, default=str).encode(),
            headers={"Content-Type": "application/json", "User-Agent": "churn-assets-alerts"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                return response.status
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise AlertDeliveryError(f"posting the alert to {redacted(self.post_url)} failed: {exc}") from exc


def redacted(url: str) -> str:
    """A webhook URL as errors show it (on the sensor's tick in the UI, in logs): its scheme and host, not the
    path and query that hold its token."""
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]  # nor a user:password@ before the host
    return f"{scheme}://{host}/…"
