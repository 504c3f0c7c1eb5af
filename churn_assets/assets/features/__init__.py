"""The features domain's assets and checks."""

assets: list = []
asset_checks: list = []
