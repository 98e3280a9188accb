"""Synthetic cohort, part 2: lesion plans (appearance from the hidden aggressiveness), placement and painting."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lesionbench.tasks.synthetic.anatomy import (
    ABDOMEN,
    BONE,
    KIDNEY,
    LIVER,
    LUNG,
    MEDIASTINUM,
    PELVIS,
    SOFT,
    Geometry,
    _Anatomy,
    _sigmoid,
)

#: How many lesions a patient has (1, 2, 3, 4).
N_LESION_PROBS = np.array([0.30, 0.30, 0.25, 0.15])
#: (median, max) nominal diameter in mm by site; the minimum is 6 mm everywhere. Medians are close, so
#: size says little about the site, and malignancy (which is balanced across sites) drives size.
SITE_DIAMETER = {BONE: (14.0, 22.0), ABDOMEN: (24.0, 50.0), MEDIASTINUM: (22.0, 44.0), LIVER: (24.0, 50.0),
                 LUNG: (22.0, 44.0), KIDNEY: (20.0, 36.0), SOFT: (22.0, 44.0), PELVIS: (24.0, 50.0)}
MIN_DIAMETER_MM = 6.0


# ============================================================================ lesions
@dataclass(frozen=True)
class _LesionPlan:
    site: int
    diameter_mm: float
    aggressiveness: float
    malignant: int
    spiculation: float
    n_spikes: int
    lobulation: float
    texture_hu: float
    edge_mm: float
    base_hu: float
    kind: str
    necrosis: bool = False
    rim: bool = False


#: Correlation of a lesion's aggressiveness with its patient's tumour biology (metastases share some of it).
_RHO = 0.5
#: Sd of the label noise: ``malignant = 1[a + N(0, _LABEL_NOISE^2) > 0]``.
_LABEL_NOISE = 0.55
#: Sd of the noise between ``a`` and each appearance cue (spiculation, lobulation, texture/edge/necrosis).
_CUE_NOISE = 0.5
#: Survival log-hazard coefficients of the mean lesion aggressiveness and of log(max diameter / 20 mm).
SURVIVAL_A, SURVIVAL_D = 1.2, 0.6


def _aggressiveness(rng: np.random.Generator, biology: float, malignant: int) -> float:
    """Draw ``a`` from its law given the patient's biology ``b`` and the lesion's (designed) label.

    The model is ``a = rho b + sqrt(1 - rho^2) e`` and ``malignant = 1[a + n > 0]`` with ``n`` the label
    noise. The label comes from a balanced design (see :func:`_malignancy_design`), so ``a`` is drawn
    conditionally: the latent ``s = a + n`` from its normal law truncated to the label's side of 0,
    then ``a`` given ``s``. The joint law of (a, label) given b is the model's; only the label's
    balance across sites is imposed.
    """
    from scipy.special import ndtr, ndtri

    mu = _RHO * biology
    var_a = 1.0 - _RHO**2
    sd_s = math.sqrt(var_a + _LABEL_NOISE**2)
    p0 = float(ndtr(-mu / sd_s))                     # P(s <= 0 | b)
    lo, hi = (p0, 1.0) if malignant else (0.0, p0)
    u = lo + (hi - lo) * float(rng.uniform(0.001, 0.999))
    s = mu + sd_s * float(ndtri(min(max(u, 1e-12), 1 - 1e-12)))
    k = var_a / sd_s**2
    return mu + k * (s - mu) + math.sqrt(var_a * (1 - k)) * float(rng.standard_normal())


def _plan_lesion(rng: np.random.Generator, site: int, anat: _Anatomy, biology: float, malignant: int) -> _LesionPlan:
    """Draw one lesion's hidden aggressiveness given its label, and the appearance it drives.

    Every cue is a noisy copy of ``a`` (none reads the label), and each is visible in a 50 mm patch
    at 1 mm: size, spiculated or lobulated margins, coarse heterogeneous texture, blurred edges,
    central necrosis and enhancing rims for aggressive lesions; cysts, calcifications, sclerotic
    bone islands and smooth homogeneous nodules for indolent ones.
    """
    a = _aggressiveness(rng, biology, malignant)
    z1, z2, z3, z4 = (a + _CUE_NOISE * rng.standard_normal() for _ in range(4))
    med, dmax = SITE_DIAMETER[site]
    d = float(np.clip(math.exp(math.log(med) + 0.42 * a + 0.2 * rng.standard_normal()), MIN_DIAMETER_MM, dmax))
    spic = float(rng.uniform(0.35, 0.9)) if z1 > 0.3 else 0.0
    n_spikes = int(rng.integers(6, 17))
    lob = 0.03 + 0.25 * _sigmoid(1.6 * z2)
    tex = 4.0 + 46.0 * _sigmoid(1.6 * z3)           # HU sd of the coarse internal texture
    edge = 0.3 + 1.7 * _sigmoid(1.2 * z3 - 0.5)     # mm: infiltrative lesions have blurred margins
    necrosis = z3 > 0.6 and d > 14.0
    rim = False
    kind = "solid"
    if site == LUNG:
        if a < -0.3 and rng.random() < 0.6:
            kind = "calcified"
        elif rng.random() < 0.15:
            kind = "subsolid"
        base = {"solid": 5.0 + 50.0 * _sigmoid(1.5 * z4), "calcified": 30.0, "subsolid": -450.0}[kind] + rng.normal(0, 8)
    elif site == LIVER:
        if a < -0.3 and rng.random() < 0.6:
            kind = "cyst"
            base = 8.0 + rng.normal(0, 4)
        else:
            base = anat.liver_hu - rng.uniform(25, 55)
            rim = z1 > 0.3
    elif site == KIDNEY:
        if a < -0.3 and rng.random() < 0.7:
            kind = "cyst"
            base = 10.0 + rng.normal(0, 4)
        else:
            base = 45.0 + rng.normal(0, 10)
            rim = z1 > 0.3
    elif site == BONE:
        # lytic destruction for aggressive lesions, sclerotic bone islands for indolent ones (noisily)
        if rng.random() < _sigmoid(1.3 * z2):
            kind = "lytic"
            base = 60.0 + rng.normal(0, 25)
        else:
            kind = "sclerotic"
            base = 1000.0 + rng.normal(0, 80)
    else:  # soft-tissue masses in fat: lymph nodes, implants, sarcoma-like masses
        if a < -0.4 and rng.random() < 0.45:
            kind = "calcified"                         # calcified (granulomatous) node
        # hypervascular (enhancing) aggressive masses vs low-density indolent nodes: 20-80 HU
        base = {ABDOMEN: 20.0, MEDIASTINUM: 16.0, SOFT: 24.0, PELVIS: 18.0}[site] + 60.0 * _sigmoid(1.5 * z4) + rng.normal(0, 6)
    if kind in ("cyst", "calcified", "sclerotic"):
        spic, lob, tex, edge, necrosis, rim = 0.0, min(lob, 0.06), min(tex, 6.0), 0.3, False, False
    if kind == "subsolid":
        necrosis = False
    return _LesionPlan(site, round(d, 1), a, malignant, spic, n_spikes, lob, tex, edge, float(base), kind,
                       bool(necrosis), bool(rim))


#: 26 unit directions used to check that a lesion sits in its anatomical context.
_PROBE_DIRS = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1) if (i, j, k) != (0, 0, 0)], dtype=float)
_PROBE_DIRS /= np.linalg.norm(_PROBE_DIRS, axis=1, keepdims=True)
_CONTEXT_FRACTION = {BONE: 0.75, SOFT: 0.6, MEDIASTINUM: 0.7, ABDOMEN: 0.7, PELVIS: 0.7}


def _bounding_radius(p: _LesionPlan) -> float:
    r0 = p.diameter_mm / 2
    return r0 * (1.0 + p.lobulation + p.spiculation) + 2.0 * p.edge_mm


def _place(rng: np.random.Generator, plan: _LesionPlan, geo: Geometry, region: np.ndarray,
           placed: list[tuple[np.ndarray, float]], candidates: np.ndarray) -> np.ndarray | None:
    """Find a lesion centre (world mm) in its site's context, inside the volume, clear of other lesions.

    The centre's z sits on a slice centre and x/y within a quarter voxel of one, so the seed voxel is
    always inside the lesion's solid core, however thick the slices.
    """
    if candidates.size == 0:
        return None
    sp = np.asarray(geo.spacing)
    lo = np.asarray(geo.lo)
    size = np.asarray(geo.size)
    r0 = plan.diameter_mm / 2
    rb = _bounding_radius(plan)
    need = _CONTEXT_FRACTION.get(plan.site, 0.85)
    for _ in range(120):
        flat = int(candidates[rng.integers(candidates.size)])
        idx = np.array(np.unravel_index(flat, region.shape), dtype=float)
        idx[:2] += rng.uniform(-0.25, 0.25, size=2)
        centre = lo + idx * sp
        # the whole bounding sphere inside the volume
        if np.any(idx * sp < rb) or np.any((size - 1 - idx) * sp < rb):
            continue
        if any(np.linalg.norm(centre - c) < rb + r + 2.0 for c, r in placed):
            continue
        probe = np.rint(idx + _PROBE_DIRS * (0.8 * r0) / sp).astype(int)
        probe = np.clip(probe, 0, size - 1)
        if np.mean(region[probe[:, 0], probe[:, 1], probe[:, 2]] == plan.site) < need:
            continue
        return centre
    return None


def _paint_lesion(rng: np.random.Generator, plan: _LesionPlan, centre: np.ndarray, geo: Geometry,
                  hu: np.ndarray, labels: np.ndarray, label: int) -> None:
    """Rasterise one lesion into ``hu`` (blended edge) and ``labels`` (voxel centres inside its margin)."""
    sp = np.asarray(geo.spacing)
    lo = np.asarray(geo.lo)
    rb = _bounding_radius(plan) + 1.0
    c_idx = (centre - lo) / sp
    i0 = np.maximum(np.floor(c_idx - rb / sp).astype(int), 0)
    i1 = np.minimum(np.ceil(c_idx + rb / sp).astype(int) + 1, np.asarray(geo.size))
    ax = [((lo[a] + np.arange(i0[a], i1[a]) * sp[a]) - centre[a]).astype(np.float32) for a in range(3)]
    dx, dy, dz = ax[0][:, None, None], ax[1][None, :, None], ax[2][None, None, :]
    r = np.sqrt(dx * dx + dy * dy + dz * dz)
    rs = np.maximum(r, 1e-3)
    ux, uy, uz = dx / rs, dy / rs, dz / rs
    r0 = plan.diameter_mm / 2
    # Lobulation: a few smooth angular waves; spiculation: narrow spikes along random directions.
    lob = np.zeros_like(r)
    for _ in range(3):
        w = rng.standard_normal(3)
        w /= np.linalg.norm(w)
        cosang = np.clip(ux * w[0] + uy * w[1] + uz * w[2], -1, 1)
        lob += np.cos(int(rng.integers(2, 5)) * np.arccos(cosang) + rng.uniform(0, 2 * np.pi)).astype(np.float32)
    boundary = r0 * (1.0 + plan.lobulation * lob / 3.0)
    if plan.spiculation > 0:
        spikes = np.zeros_like(r)
        sharp = rng.uniform(40, 90)
        for _ in range(plan.n_spikes):
            v = rng.standard_normal(3)
            v /= np.linalg.norm(v)
            dot = np.clip(ux * v[0] + uy * v[1] + uz * v[2], 0, 1)
            spikes = np.maximum(spikes, dot ** sharp)
        boundary = boundary + r0 * plan.spiculation * spikes
    inside = r <= boundary
    # Soft edge (partial volume and infiltration): logistic in the distance to the margin.
    wgt = 1.0 / (1.0 + np.exp(-np.clip((boundary - r) / np.float32(plan.edge_mm), -30.0, 30.0)))
    shape = r.shape
    tex = rng.standard_normal(shape).astype(np.float32)
    from scipy.ndimage import gaussian_filter

    # Coarse blobs (about 2 mm), scaled to unit sd so that texture_hu is the texture's HU sd: finer
    # texture would drown in the scanner noise and the 1 mm resampling of an encoder's patch.
    tex = gaussian_filter(tex, sigma=np.maximum(1.8 / sp, 0.5))
    tex /= np.float32(max(float(tex.std()), 1e-3))
    val = plan.base_hu + plan.texture_hu * tex
    if plan.kind == "subsolid":   # ground glass with a solid core
        val = np.where(r < 0.4 * r0, 20.0 + plan.texture_hu * tex, val)
    if plan.kind == "calcified":
        val = np.where(r < 0.45 * r0, 450.0 + 30.0 * tex, val)
    if plan.necrosis:             # irregular fluid-density centre
        val = np.where(r < (0.45 + 0.08 * tex) * r0, 12.0 + 6.0 * tex, val)
    if plan.rim:                  # enhancing rim
        val = np.where((r > 0.75 * boundary) & (r < boundary), val + 40.0, val)
    sl = tuple(slice(i0[a], i1[a]) for a in range(3))
    hu[sl] = hu[sl] * (1 - wgt) + val * wgt
    lab = labels[sl]
    lab[inside] = label

