"""Evaluations of attributions as pure array functions, one family per file (see docs/).

Host-side loops built on them (the sanity table, ROAR's retraining) are in
``jaxgrad.drivers``.
"""

from jaxgrad.evaluation.faithfulness import faithfulness_correlation, infidelity
from jaxgrad.evaluation.localization import block_localization
from jaxgrad.evaluation.perturbation import (
    AGGREGATES,
    FILLS,
    MODES,
    ORDERS,
    area_under_curve,
    deletion_insertion,
    mask_images,
    pixel_perturbation,
    pixel_salience,
    removal_ranks,
)
from jaxgrad.evaluation.randomization import (
    layer_names,
    leaf_paths,
    randomization_stages,
    tree_layers,
)
from jaxgrad.evaluation.road import noisy_linear_imputation, road
from jaxgrad.evaluation.robustness import sensitivity
from jaxgrad.evaluation.sampling import (
    density_ratio_profile,
    gan_test_accuracy,
    gradient_ascent,
    langevin_sample,
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
    "AGGREGATES",
    "FILLS",
    "MODES",
    "ORDERS",
    "area_under_curve",
    "block_localization",
    "deletion_insertion",
    "density_ratio_profile",
    "faithfulness_correlation",
    "gan_test_accuracy",
    "gradient_ascent",
    "hog_similarity",
    "infidelity",
    "langevin_sample",
    "layer_names",
    "mask_images",
    "noisy_linear_imputation",
    "pixel_perturbation",
    "pixel_salience",
    "leaf_paths",
    "randomization_stages",
    "tree_layers",
    "rankdata_average",
    "removal_ranks",
    "road",
    "sensitivity",
    "spearman",
    "spearman_abs",
    "spearman_nz",
    "ssim",
]
