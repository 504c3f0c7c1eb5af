"""Evidently's drift table for a snapshot of users: every column's test and distribution, without the
plot of the column over the rows' order.

Evidently's legacy ``DataDriftTable`` draws two plotly figures per numeric column: the distribution of
the current rows against the reference, and the current values' mean over the row index (binned)
against the reference's mean ± std. A feature snapshot has no order (its rows are users, sampled), so
the second plot means nothing, and drawing it was ~3.5 s of a ~6 s report of 57 columns. The metric
here is Evidently's own, registered under its own type name with a renderer that leaves that plot out;
the statistics, verdicts and everything else in the HTML are Evidently's.

Imported where the report is made: it imports Evidently, which takes seconds.
"""

from typing import Any

from evidently.legacy.metrics import DataDriftTable
from evidently.legacy.metrics.data_drift.data_drift_table import DataDriftTableRenderer
from evidently.legacy.renderers.base_renderer import default_renderer


class SnapshotDriftTable(DataDriftTable):
    """``DataDriftTable``, rendered without the plot over the rows' order."""

    class Config:
        type_alias = "churn_assets:metric:SnapshotDriftTable"


@default_renderer(wrap_type=SnapshotDriftTable)
class SnapshotDriftTableRenderer(DataDriftTableRenderer):
    def _generate_column_params(self, column_name: str, data: Any, *args: Any, **kwargs: Any) -> Any:
        return super()._generate_column_params(column_name, data.copy(update={"scatter": None}), *args, **kwargs)
