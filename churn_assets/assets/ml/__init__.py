"""The ml domain's assets and checks."""

from churn_assets.assets.ml.training_set import training_set, training_set_is_sound

assets: list = [training_set]
asset_checks: list = [training_set_is_sound]
