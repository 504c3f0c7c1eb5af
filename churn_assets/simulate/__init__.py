"""A seeded simulator of mobile-app event exports (the landing zone) with the ground truth behind them."""

from churn_assets.simulate.population import EVENT_TYPES
from churn_assets.simulate.simulator import DIRTY_KINDS, SimulationRefused, SimulationSummary, simulate

__all__ = ["simulate", "SimulationRefused", "SimulationSummary", "EVENT_TYPES", "DIRTY_KINDS"]
