"""Explanations: CAM extraction and overlays, the attribution-gap analysis, localisation."""

from pamc.explain.cam import (
    CAMs,
    boost,
    compute_cams,
    load_image_files,
    model_image_size,
    pooled_scores,
    read_image,
    resize_for_model,
    select_classes,
    upsample_cam,
)
from pamc.explain.gap import GapResult, attribution, attribution_gap, pearson, plot_gap, top_region
from pamc.explain.html import write_index
from pamc.explain.localization import box_iou, cam_box, localization, peak_pixel
from pamc.explain.overlay import Panel, heat, overlay_array, save_overlay_figure, score_title
from pamc.explain.sweep import plot_alpha_sweep

__all__ = [
    "CAMs", "boost", "compute_cams", "model_image_size",
    "pooled_scores", "read_image", "resize_for_model", "select_classes", "upsample_cam",
    "GapResult", "attribution", "attribution_gap", "pearson", "plot_gap", "top_region",
    "write_index", "box_iou", "cam_box", "localization", "peak_pixel", "Panel", "heat",
    "overlay_array", "save_overlay_figure", "score_title", "plot_alpha_sweep",
    "load_image_files",
]
