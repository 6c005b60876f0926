"""Host-side drivers: loops over data sets, retraining and tables built on the pure functions.

They may import training and sharding (see the layer table in ``docs/architecture.md``);
nothing below them imports a driver.
"""

from jaxgrad.drivers.dataset import TARGET_FROM, DatasetAttribution, attribute_dataset
from jaxgrad.drivers.roar import keep_ranked, make_retrainer, roar
from jaxgrad.drivers.sanity import default_metrics, mean_ci99, sanity_table

__all__ = [
    "TARGET_FROM",
    "DatasetAttribution",
    "attribute_dataset",
    "default_metrics",
    "keep_ranked",
    "make_retrainer",
    "mean_ci99",
    "roar",
    "sanity_table",
]
