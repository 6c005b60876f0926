"""Evaluations of attributions: one per file (see DESIGN.md)."""

from jaxgrad.evaluation.localization import block_localization
from jaxgrad.evaluation.perturbation import (
    area_under_curve,
    pixel_perturbation,
    pixel_salience,
    removal_ranks,
)
from jaxgrad.evaluation.roar import make_retrainer, mask_images, roar
from jaxgrad.evaluation.sampling import (
    density_ratio_profile,
    gan_test_accuracy,
    gradient_ascent,
    langevin_sample,
)
from jaxgrad.evaluation.sanity import (
    default_metrics,
    layer_names,
    mean_ci99,
    randomization_stages,
    sanity_table,
)
from jaxgrad.evaluation.similarity import (
    hog_similarity,
    rankdata_average,
    spearman,
    spearman_abs,
    spearman_nz,
    ssim,
)

__all__ = [
    "area_under_curve",
    "block_localization",
    "pixel_perturbation",
    "pixel_salience",
    "removal_ranks",
    "roar",
    "default_metrics",
    "density_ratio_profile",
    "gan_test_accuracy",
    "gradient_ascent",
    "hog_similarity",
    "langevin_sample",
    "layer_names",
    "make_retrainer",
    "mask_images",
    "mean_ci99",
    "randomization_stages",
    "rankdata_average",
    "sanity_table",
    "spearman",
    "spearman_abs",
    "spearman_nz",
    "ssim",
]
