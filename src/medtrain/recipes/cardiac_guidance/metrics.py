"""Guidance metrics of cardiac-guidance: per-DOF errors in physical units (mm, degrees) and R².

For predictions ``p`` and truths ``y`` of shape ``[N, 6]`` (physical units) and the per-DOF training standard
deviations ``σ``:

- ``mae_<dof> = mean_i |p_id − y_id|`` (mm for x, y, z; degrees for roll, pitch, yaw);
- ``r2_<dof>`` = scikit-learn's coefficient of determination of DOF d (``1 − SS_res / SS_tot``), ``r2`` their mean;
- ``mae_translation_mm`` / ``mae_rotation_deg``: the mean of the three translation / rotation MAEs;
- ``main_task_mae = mean_d(mae_d / σ_d)``: the unit-free MAE in normalised units, the recipe's headline number.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import r2_score

from medtrain.recipes.cardiac_guidance.records import DOF_NAMES


def guidance_metrics(prediction: np.ndarray, truth: np.ndarray, std: Sequence[float]) -> dict[str, float]:
    """The metrics of the module docstring for ``prediction`` and ``truth`` ``[N, 6]``; empty dict when N = 0.

    R² needs two samples; with fewer it is left out.
    """
    prediction, truth = np.asarray(prediction, np.float64), np.asarray(truth, np.float64)
    if len(truth) == 0:
        return {}
    mae = np.abs(prediction - truth).mean(axis=0)
    out = {f"mae_{name}": float(value) for name, value in zip(DOF_NAMES, mae, strict=True)}
    out["mae_translation_mm"] = float(mae[:3].mean())
    out["mae_rotation_deg"] = float(mae[3:].mean())
    out["main_task_mae"] = float((mae / np.asarray(std, np.float64)).mean())
    if len(truth) >= 2:
        r2 = r2_score(truth, prediction, multioutput="raw_values")
        out.update({f"r2_{name}": float(value) for name, value in zip(DOF_NAMES, r2, strict=True)})
        out["r2"] = float(np.mean(r2))
    return out
