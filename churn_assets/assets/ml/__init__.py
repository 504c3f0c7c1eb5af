"""The ml domain's assets and checks."""

from churn_assets.assets.ml.checks import model_artifacts_are_sound, predictions_cover_every_user
from churn_assets.assets.ml.model import model
from churn_assets.assets.ml.predictions import predictions
from churn_assets.assets.ml.training_set import training_set, training_set_is_sound

assets: list = [training_set, model, predictions]
asset_checks: list = [training_set_is_sound, model_artifacts_are_sound, predictions_cover_every_user]
