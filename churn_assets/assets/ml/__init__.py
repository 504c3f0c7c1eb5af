"""The ml domain's assets and checks."""

assets: list = []
asset_checks: list = []
