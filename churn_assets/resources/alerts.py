"""Where alerts go: the log always, and a webhook (``CHURN_ALERT_WEBHOOK``) when one is configured."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from typing import Any

import dagster as dg
from pydantic import Field

from churn_assets.config import redacted_url


class AlertDeliveryError(Exception):
    """The webhook did not accept an alert."""


class AlertWebhook(dg.ConfigurableResource):
    """Posts JSON alerts to ``CHURN_ALERT_WEBHOOK``; without a URL, alerts are only logged. The code location
    gives it ``dg.EnvVar("CHURN_ALERT_WEBHOOK")`` (``build_resources``): the UI's resource page then names the
    variable instead of showing the URL, whose path is the webhook's token."""

    url: str | None = Field(
        default=None,
        description="URL that alerts (failed runs, late landing days) are POSTed to as JSON (CHURN_ALERT_WEBHOOK).",
    )
    timeout_seconds: float = Field(
        default=5.0, description="How long one POST may take; a slow webhook must not stall the sensor."
    )

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
        where = redacted_url(self.post_url)  # the URL's path is the webhook's token: never in a message or log
        body = json.dumps(payload, default=str).encode()
        try:
            request = urllib.request.Request(
                self.post_url,
                data=body,
                headers={"Content-Type": "application/json", "User-Agent": "churn-assets-alerts"},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                return response.status
        except (ValueError, http.client.InvalidURL) as exc:  # their messages quote the URL, token and all
            raise AlertDeliveryError(
                f"posting the alert to {where} failed: urllib cannot post to that URL ({type(exc).__name__}); "
                "check CHURN_ALERT_WEBHOOK"
            ) from None
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError) as exc:
            raise AlertDeliveryError(f"posting the alert to {where} failed: {exc}") from exc
