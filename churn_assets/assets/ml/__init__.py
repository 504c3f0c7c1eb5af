"""ML: the monthly training sets and models, and the churn predictions of each day."""

from churn_assets.assets.ml.checks import model_artifacts_are_sound, predictions_cover_every_user, training_set_is_sound
from churn_assets.assets.ml.model import model
from churn_assets.assets.ml.predictions import predictions
from churn_assets.assets.ml.training_set import training_set

assets = [training_set, model, predictions]
asset_checks = [training_set_is_sound, model_artifacts_are_sound, predictions_cover_every_user]
