"""Layers onto several conductance pairs per weight (Mackin 2022): the mapping's side of the
``dual_pair``, ``wpo`` and ``multiplicative`` + ``lsp_trim`` quantisers.

On a chip with ``pairs_per_weight`` P and significance factor F a crossbar output is
``sum_k F^k (G+_k - G-_k)/g_max``, so a layer with translation targets (``pairs.PairTargets``)
gets ``out_scale = g_max / us_per_weight``:

- ``dual_pair``: naive programming (``pairs.NPair`` with the chip's F^k), continuous targets;
- ``wpo``: the weight programming optimiser's translation (``wpo.optimise``) for the
  network's weights at the chip's F, pairs and device family. The search takes minutes, so
  its result is cached on disk (``.cache/pcm-twin/wpo/``, ``$PCM_TWIN_CACHE_DIR``) by a hash
  of the weights, the search settings and the chip's device model;
- ``multiplicative`` with ``lsp_trim``: the seed paper's levels m+- q+- on the most
  significant pair (pair 1), which the firmware can recognise and restore, and the residual
  w - Q(w) of every weight, continuous, on the least significant pair (pair 0), clipped at
  g_max. Within the grid's range the residual is at most half a level, which the LSP holds
  with F times the MSP's resolution; weights beyond the grid's ends leave larger residuals.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from controller.workloads.pairs import GridTranslation, NPair, Translation
from controller.workloads.quantisers import (
    DualPairQuantiser,
    LayerQuantisation,
    MultiplicativeQuantiser,
    PairLevels,
    QuantiserConfig,
    WPOQuantiser,
    quantise_layers,
)
from controller.workloads.wpo import optimise
from device_twin.config import ChipConfig


def needs_pairs(q: QuantiserConfig) -> bool:
    """Whether the quantiser spreads weights over several pairs."""
    return isinstance(q, DualPairQuantiser | WPOQuantiser) or (
        isinstance(q, MultiplicativeQuantiser) and q.lsp_trim
    )


def quantise_on_chip(
    weights: dict[str, np.ndarray], q: QuantiserConfig, chip: ChipConfig
) -> dict[str, LayerQuantisation]:
    """Every layer's targets on ``chip``'s pairs (quantisers of one pair: pair 0 only)."""
    if not needs_pairs(q):
        return quantise_layers(weights, q, chip.g_max_us)
    if chip.pairs_per_weight < 2:
        raise ValueError(
            f"quantiser {q.kind!r}{' with lsp_trim' if q.kind == 'multiplicative' else ''} "
            "needs a chip with pairs_per_weight >= 2 (chip: pairs_per_weight: 2, "
            "significance_factor: F)"
        )
    if isinstance(q, MultiplicativeQuantiser):
        return _multiplicative_trim(weights, q, chip)
    translation: Translation
    if isinstance(q, WPOQuantiser):
        translation = optimised_translation(weights, q, chip)
    else:
        translation = NPair(chip.significance, chip.g_max_us, 0.0, "dual_pair")
    return {name: _on_pairs(name, w, translation, chip.g_max_us) for name, w in weights.items()}


def _on_pairs(name: str, w: np.ndarray, tr: Translation, g_max_us: float) -> LayerQuantisation:
    t = tr.translate(w)
    upper = [PairLevels(t.g_pos_us[k], t.g_neg_us[k]) for k in range(1, t.n_pairs)]
    return LayerQuantisation(
        name, w.astype(np.float32), t.weights().astype(np.float32), t.g_pos_us[0],
        t.g_neg_us[0], g_max_us / t.us_per_weight, upper_pairs=upper,
    )  # fmt: skip


def _multiplicative_trim(
    weights: dict[str, np.ndarray], q: MultiplicativeQuantiser, chip: ChipConfig
) -> dict[str, LayerQuantisation]:
    if chip.pairs_per_weight != 2:
        raise ValueError("lsp_trim needs a chip with exactly two pairs per weight")
    f, g_max = chip.significance_factor, chip.g_max_us
    out = {}
    for name, lq in quantise_layers(weights, q, g_max).items():
        us_per_weight = f * g_max / lq.out_scale  # the MSP's levels count F times
        residual_us = (lq.w.astype(np.float64) - lq.w_q) * us_per_weight
        trim = np.clip(residual_us, -g_max, g_max)
        w_q = lq.w_q + trim / us_per_weight
        msp = PairLevels(lq.g_pos_us, lq.g_neg_us, lq.level_pos, lq.level_neg, lq.q_pos_us,
                         lq.q_neg_us)  # fmt: skip
        out[name] = LayerQuantisation(
            name, lq.w, w_q.astype(np.float32), np.clip(trim, 0, None).astype(np.float32),
            np.clip(-trim, 0, None).astype(np.float32), g_max / us_per_weight,
            delta_pos=lq.delta_pos, delta_neg=lq.delta_neg, annealing=lq.annealing,
            upper_pairs=[msp],
        )  # fmt: skip
    return out


# --- the optimiser's translation, cached -------------------------------------------------------
def wpo_cache_dir() -> Path:
    return Path(os.environ.get("PCM_TWIN_CACHE_DIR", ".cache/pcm-twin")) / "wpo"


def optimised_translation(
    weights: dict[str, np.ndarray], q: WPOQuantiser, chip: ChipConfig
) -> Translation:
    """The optimiser's translation for these weights at the chip's pairs and F (cached)."""
    cfg = q.search.model_copy(update={"n_pairs": chip.pairs_per_weight, "g_max_us": chip.g_max_us,
                                      "significance_factor": chip.significance_factor})  # fmt: skip
    h = hashlib.sha256()
    for name in sorted(weights):
        h.update(name.encode())
        h.update(np.ascontiguousarray(weights[name], np.float64).tobytes())
    h.update(cfg.model_dump_json().encode())
    h.update(chip.device.model_dump_json().encode())
    path = wpo_cache_dir() / f"{h.hexdigest()[:24]}.json"
    if path.exists():
        return _load(json.loads(path.read_text()))
    res = optimise(weights, cfg, chip)
    record = {
        "significance": list(res.translation.significance), "g_max_us": chip.g_max_us,
        "loss": res.loss, "baseline_loss": res.baseline_loss, "naive_loss": res.naive_loss,
        "search_loss": res.search_loss, "wall_s": res.wall_s, "evaluations": res.evaluations,
    }  # fmt: skip
    if isinstance(res.translation, GridTranslation):
        record |= {"kind": "grid", "g_pos_us": res.translation.g_pos_us.tolist(),
                   "g_neg_us": res.translation.g_neg_us.tolist()}  # fmt: skip
    else:
        record |= {"kind": "naive"}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)
    return _load(record)


def _load(record: dict) -> Translation:
    f = tuple(float(x) for x in record["significance"])
    if record["kind"] == "grid":
        return GridTranslation(f, np.asarray(record["g_pos_us"], np.float32),
                               np.asarray(record["g_neg_us"], np.float32), "wpo")  # fmt: skip
    return NPair(f, float(record["g_max_us"]), 0.0, "wpo")
