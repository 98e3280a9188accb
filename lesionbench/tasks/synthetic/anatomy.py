"""Synthetic cohort, part 1: a volume's grid (:class:`Geometry`), smooth noise fields, and the torso anatomy."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

SITE_NAMES: tuple[str, ...] = ("bone", "abdomen", "mediastinum", "liver", "lung", "kidney", "soft tissue", "pelvis")
BONE, ABDOMEN, MEDIASTINUM, LIVER, LUNG, KIDNEY, SOFT, PELVIS = range(8)

# Direction variants: (axis permutation, signs). Index axis c of the stored image runs along the
# physical (LPS) axis perm[c], in the direction signs[c]. Each block of 8 patients gets all 8 in
# random order, so even a tiny cohort has flipped and permuted volumes.
_DIRECTION_VARIANTS: tuple[tuple[tuple[int, int, int], tuple[int, int, int]], ...] = (
    ((0, 1, 2), (1, 1, 1)),     # identity (DICOM/ITK style)
    ((0, 1, 2), (1, 1, 1)),
    ((0, 1, 2), (-1, -1, 1)),   # RAS-stored, as many NIfTI converters write
    ((0, 1, 2), (-1, 1, 1)),    # x flipped
    ((0, 1, 2), (1, -1, 1)),    # y flipped
    ((0, 1, 2), (1, 1, -1)),    # slices stored head to feet
    ((1, 0, 2), (1, 1, 1)),     # x and y swapped
    ((2, 0, 1), (1, -1, 1)),    # slice axis first, y flipped
)
_SLICE_SPACINGS = np.array([1.25, 1.5, 2.0, 2.5, 3.0, 5.0])
_SLICE_PROBS = np.array([0.2, 0.15, 0.2, 0.15, 0.15, 0.15])


# ============================================================================ geometry
@dataclass(frozen=True)
class Geometry:
    """A volume's grid: canonical (x, y, z ascending LPS) sizes and spacing, and how it is stored.

    Voxels are synthesised on the canonical grid, whose world coordinates are simply
    ``lo + index * spacing`` per axis; :meth:`to_image_array` then flips and permutes the array
    into the stored index order, whose direction cosines and origin :meth:`direction` and
    :meth:`origin` give.
    """

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    lo: tuple[float, float, float]
    perm: tuple[int, int, int]
    signs: tuple[int, int, int]

    def coords(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World coordinates (mm) of the canonical voxel centres along x, y and z."""
        return tuple(np.float32(self.lo[a]) + np.arange(self.size[a], dtype=np.float32) * np.float32(self.spacing[a]) for a in range(3))  # type: ignore[return-value]

    def image_size(self) -> tuple[int, int, int]:
        return tuple(self.size[p] for p in self.perm)  # type: ignore[return-value]

    def image_spacing(self) -> tuple[float, float, float]:
        return tuple(self.spacing[p] for p in self.perm)  # type: ignore[return-value]

    def direction(self) -> tuple[float, ...]:
        d = np.zeros((3, 3))
        for c, (p, s) in enumerate(zip(self.perm, self.signs, strict=True)):
            d[p, c] = s
        return tuple(float(v) for v in d.ravel())

    def origin(self) -> tuple[float, float, float]:
        o = list(self.lo)
        for p, s in zip(self.perm, self.signs, strict=True):
            if s < 0:
                o[p] = self.lo[p] + (self.size[p] - 1) * self.spacing[p]
        return tuple(o)  # type: ignore[return-value]

    def to_image_array(self, canon: np.ndarray) -> np.ndarray:
        """Canonical ``[x, y, z]`` array -> the ``[k, j, i]`` array SimpleITK expects for this geometry."""
        a = canon
        for p, s in zip(self.perm, self.signs, strict=True):
            if s < 0:
                a = np.flip(a, axis=p)
        a = np.transpose(a, self.perm)        # [i, j, k]
        return np.ascontiguousarray(np.transpose(a, (2, 1, 0)))

    def image_index(self, canon_index: tuple[float, float, float]) -> tuple[float, float, float]:
        """Continuous index in the stored image of a continuous canonical index."""
        out = []
        for p, s in zip(self.perm, self.signs, strict=True):
            out.append(canon_index[p] if s > 0 else (self.size[p] - 1) - canon_index[p])
        return tuple(out)  # type: ignore[return-value]

    def to_sitk(self, canon: np.ndarray) -> Any:
        import SimpleITK as sitk

        img = sitk.GetImageFromArray(self.to_image_array(canon))
        img.SetSpacing(self.image_spacing())
        img.SetOrigin(self.origin())
        img.SetDirection(self.direction())
        return img


def _f32_exact(v: float, step: float) -> float:
    """Round to a multiple of ``step`` (a power of two) so NIfTI's float32 header stores it exactly."""
    return float(round(v / step) * step)


def _draw_geometry(rng: np.random.Generator, variant: int) -> Geometry:
    s_xy = _f32_exact(rng.uniform(0.6, 0.9), 1 / 1024)
    fov = rng.uniform(175.0, 235.0)
    n_xy = int(np.clip(round(fov / s_xy), 192, 272))
    s_z = float(rng.choice(_SLICE_SPACINGS, p=_SLICE_PROBS))
    z_ext = rng.uniform(150.0, 250.0)
    n_z = max(int(round(z_ext / s_z)), 24)
    fov_x = n_xy * s_xy
    # Non-zero origins: the body is not centred on the scanner axis, and z starts anywhere.
    lo_x = _f32_exact(-fov_x / 2 + rng.uniform(-25, 25), 1 / 64)
    lo_y = _f32_exact(-fov_x / 2 + rng.uniform(-40, 15), 1 / 64)
    lo_z = _f32_exact(rng.uniform(-450, 50), 1 / 64)
    perm, signs = _DIRECTION_VARIANTS[variant]
    return Geometry((n_xy, n_xy, n_z), (s_xy, s_xy, s_z), (lo_x, lo_y, lo_z), perm, signs)


# ============================================================================ noise fields
def _smooth_field(rng: np.random.Generator, geo: Geometry, cell_mm: float, zs: slice = slice(None),
                  at: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """A smooth random field (about unit variance) on the canonical grid: coarse noise, trilinear upsampling.

    Only the slices ``zs`` are computed (structures confined along z need no more); with ``at`` (voxel indices
    ``(i, j, k)``, as :func:`numpy.nonzero` gives) only those voxels, as a 1-D array. Either way each voxel gets
    the same value as in the whole field, and the random draws do not depend on ``zs`` or ``at``.
    """
    coarse_shape = [int(math.ceil(geo.size[a] * geo.spacing[a] / cell_mm)) + 2 for a in range(3)]
    # 1.6: linear interpolation of white noise loses variance between nodes; restore about unit scale.
    field = rng.standard_normal(coarse_shape, dtype=np.float32) * np.float32(1.6)
    for a in range(3):
        pos = np.arange(geo.size[a], dtype=np.float32) * np.float32(geo.spacing[a] / cell_mm)
        if a == 2 and at is None:
            pos = pos[zs]
        i0 = np.floor(pos).astype(np.int64)
        w = (pos - i0).astype(np.float32)
        if a == 2 and at is not None:
            # the last, volume-sized pass at the given voxels only: the same float32 operations per voxel
            i, j, k = at
            lo_ = field[i, j, i0[k]]
            hi_ = field[i, j, i0[k] + 1]
            lo_ *= (1 - w)[k]
            hi_ *= w[k]
            lo_ += hi_
            return lo_
        shape = [1, 1, 1]
        shape[a] = -1
        w = w.reshape(shape)
        # field[i0] * (1 - w) + field[i0 + 1] * w, with the same float32 operations done in place (fewer
        # volume-sized temporaries)
        lo_ = np.take(field, i0, axis=a)
        hi_ = np.take(field, i0 + 1, axis=a)
        lo_ *= 1 - w
        hi_ *= w
        lo_ += hi_
        field = lo_
    return field


def _z_range(t: np.ndarray, lo: float, hi: float) -> slice:
    """The slices whose normalised height ``t`` lies in ``[lo, hi]`` (at least one slice)."""
    idx = np.flatnonzero((t >= lo) & (t <= hi))
    if idx.size == 0:
        return slice(0, 1)
    return slice(int(idx[0]), int(idx[-1]) + 1)


def _slab_le1(in_plane: np.ndarray, along_z: np.ndarray) -> np.ndarray:
    """``in_plane + along_z <= 1`` (an ellipsoid: ``in_plane`` >= 0 of shape (nx, ny, 1), ``along_z`` of shape
    (1, 1, nz)) as a volume, added up only on the slices where ``along_z <= 1``: elsewhere it cannot hold.
    Each voxel gets the same float32 sum as over the whole volume, in a fraction of the time."""
    out = np.zeros(in_plane.shape[:2] + along_z.shape[2:], dtype=bool)
    ks = np.flatnonzero(along_z.ravel() <= 1.0)
    if ks.size:
        zs = slice(int(ks[0]), int(ks[-1]) + 1)
        out[:, :, zs] = (in_plane + along_z[:, :, zs]) <= 1.0
    return out


def _on_rib(shell: np.ndarray, zmm: np.ndarray, ang: np.ndarray, phase: float, period: float) -> np.ndarray:
    """``shell & (mod(zmm + 10 |ang| + phase, period) < 0.35 period)``: the ribs (sloping down from the spine to
    the front) within ``shell``, the thin band where a rib can be. The modulo is taken on that band's voxels only
    (over the whole volume it was the torso's slowest line), with the same float32 operations per voxel."""
    ribs = shell.copy()
    i, j, k = np.nonzero(ribs)
    ribs[i, j, k] = np.mod(zmm[0, 0, k] + (10.0 * np.abs(ang))[i, j, 0] + phase, period) < period * 0.35
    return ribs


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ============================================================================ anatomy
# Region codes of the placement map: the site classes, plus a few structures no lesion goes into.
_R_OUT, _R_OTHER = 255, 254


@dataclass(frozen=True)
class _Anatomy:
    hu: np.ndarray          # float32 canonical HU, before noise
    region: np.ndarray      # uint8 canonical: site class where a lesion of that class may sit
    liver_hu: float
    kidney_hu: float


def _build_anatomy(rng: np.random.Generator, geo: Geometry) -> _Anatomy:
    """Paint a compressed torso (pelvis -> abdomen -> thorax along z) in world coordinates."""
    x, y, z = geo.coords()
    nx, ny, nz = geo.size
    fov = nx * geo.spacing[0]
    cx = float(x[0]) + fov / 2 + rng.uniform(-0.03, 0.03) * fov
    cy = float(y[0]) + fov / 2 + rng.uniform(-0.02, 0.04) * fov
    U = (x - cx).reshape(-1, 1, 1)                       # patient left +
    V = (y - cy).reshape(1, -1, 1)                       # posterior +
    t = ((z - z[0]) / max(float(z[-1] - z[0]), 1.0)).reshape(1, 1, -1)   # 0 feet end .. 1 head end
    tt = t.ravel()

    A = fov * rng.uniform(0.40, 0.45)                    # body half-width (mm)
    B = min(A * rng.uniform(0.68, 0.80), fov * 0.44)    # body half-depth
    # The body is a little narrower in the pelvis and the upper chest.
    width_t = (1.0 - 0.05 * np.cos(np.pi * tt * 2.0)).astype(np.float32).reshape(1, 1, -1)
    fat = rng.uniform(6.0, 16.0)
    muscle = rng.uniform(5.0, 9.0)
    contrast = rng.random() < 0.6

    shape = (nx, ny, nz)

    def _b(mask: np.ndarray) -> np.ndarray:
        # 2D masks (shapes constant along z) broadcast to the volume only when painted.
        return np.broadcast_to(mask, shape)

    hu = np.full(shape, -1000.0, dtype=np.float32)
    region = np.full(shape, _R_OUT, dtype=np.uint8)

    def ell(a: Any, b: Any, u0: float = 0.0, v0: float = 0.0) -> np.ndarray:
        return ((U - u0) / a) ** 2 + ((V - v0) / b) ** 2

    body_e = ell(A * width_t, B * width_t)
    body = body_e <= 1.0
    hu[_b(body)] = -100.0 + rng.uniform(-10, 10)             # subcutaneous fat
    region[_b(body)] = SOFT
    Ai, Bi = A - fat, B - fat
    wall_inner = ell((Ai - muscle) * width_t, (Bi - muscle) * width_t) <= 1.0
    muscle_m = (ell(Ai * width_t, Bi * width_t) <= 1.0) & ~wall_inner
    hu[_b(muscle_m)] = 50.0
    cavity = wall_inner
    hu[_b(cavity)] = -90.0                                   # visceral / mediastinal fat
    region[_b(cavity)] = _R_OTHER
    Ac, Bc = (Ai - muscle), (Bi - muscle)                # cavity half-axes at width_t == 1

    # --- thorax and the zones along z
    t_dia = rng.uniform(0.55, 0.60)                      # diaphragm level
    t_pel = rng.uniform(0.20, 0.25)                      # pelvic inlet
    thorax = t >= t_dia
    pelvis_z = t < t_pel
    abdomen_z = (t >= t_pel) & (t < t_dia)

    # --- spine: vertebral bodies with discs, a canal, posterior elements
    r_vb = 0.17 * Ac
    v_vb = Bc * 0.62
    vb = ell(r_vb, r_vb * 0.85, 0.0, v_vb) <= 1.0
    period = rng.uniform(14.0, 20.0)
    zmm = (z - z[0]).reshape(1, 1, -1)
    disc = np.mod(zmm + rng.uniform(0, period), period) < period * 0.2
    vb_core = ell(r_vb - 2.0, r_vb * 0.85 - 2.0, 0.0, v_vb) <= 1.0
    hu[_b(vb & ~vb_core)] = 1000.0                           # cortical rim
    hu[_b(vb_core)] = 300.0                                  # cancellous bone
    hu[_b(vb_core & disc)] = 80.0                            # intervertebral discs
    region[_b(vb_core & ~disc)] = BONE
    region[_b((vb & ~vb_core) | (vb_core & disc))] = _R_OTHER
    canal = ell(r_vb * 0.45, r_vb * 0.45, 0.0, v_vb + r_vb * 1.35) <= 1.0
    arch = (ell(r_vb * 0.75, r_vb * 0.75, 0.0, v_vb + r_vb * 1.35) <= 1.0) & ~canal & ~disc
    spinous = (np.abs(U) < 3.0) & (V > v_vb + r_vb * 1.6) & (V < v_vb + r_vb * 2.6) & ~disc
    hu[_b(arch | spinous)] = 700.0
    hu[_b(canal)] = 20.0
    region[_b(arch | spinous | canal)] = _R_OTHER
    paraspinal = ((ell(r_vb * 0.9, r_vb * 1.1, -r_vb * 1.4, v_vb + r_vb * 1.6) <= 1.0)
                  | (ell(r_vb * 0.9, r_vb * 1.1, r_vb * 1.4, v_vb + r_vb * 1.6) <= 1.0)) & cavity & ~arch & ~spinous
    hu[_b(paraspinal)] = 50.0
    region[_b(paraspinal)] = _R_OTHER

    # --- lungs
    lung_half = rng.uniform(0.36, 0.42) * Ac
    apex = np.clip(np.sqrt(np.clip(1.0 - ((t - 1.0) / (1.05 - t_dia)) ** 8, 0, 1)), 0.15, 1.0)
    lung_l = ell(lung_half * apex, 0.78 * Bc * apex, 0.50 * Ac, -0.02 * Bc) <= 1.0
    lung_r = ell(lung_half * apex, 0.78 * Bc * apex, -0.50 * Ac, -0.02 * Bc) <= 1.0
    med_half = 0.16 * Ac
    lungs = (lung_l | lung_r) & thorax & cavity & (np.abs(U) > med_half) & ~(vb | arch | paraspinal)
    zs = _z_range(tt, t_dia, 1.0)
    vessel1 = _smooth_field(rng, geo, 7.0, zs)
    vessel2 = _smooth_field(rng, geo, 7.0, zs)
    lung_tex = _smooth_field(rng, geo, 12.0, zs)
    vess = (np.abs(vessel1) < 0.16) & (np.abs(vessel2) < 0.16)
    dependent = np.clip((V / Bc + 0.5), 0, 1.5) * 45.0   # posterior lung is denser when supine
    lung_hu = -865.0 + 20.0 * lung_tex + dependent
    np.copyto(lung_hu, 30.0 + 20.0 * lung_tex, where=vess)
    np.copyto(hu[:, :, zs], lung_hu, where=_b(lungs)[:, :, zs])
    region[_b(lungs)] = LUNG
    del vessel1, vessel2, lung_hu, vess

    # --- mediastinum: fat region with heart, aorta, trachea
    mediast = thorax & cavity & ~lungs & (np.abs(U) <= med_half * 1.6) & (V < v_vb - r_vb * 0.9)
    region[_b(mediast)] = MEDIASTINUM
    blood = 180.0 + rng.uniform(-30, 40) if contrast else 40.0
    t_heart = t_dia + 0.15 * (1 - t_dia)
    heart = _slab_le1(ell(0.24 * Ac, 0.30 * Bc, 0.06 * Ac, -0.28 * Bc), ((t - t_heart) / (0.38 * (1 - t_dia))) ** 2)
    heart &= cavity & (t >= t_dia - 0.02)
    hu[_b(heart)] = 40.0 + rng.uniform(-5, 5)
    region[_b(heart)] = _R_OTHER
    aorta_r = 0.07 * Ac
    aorta = (ell(aorta_r, aorta_r, 0.08 * Ac, v_vb - r_vb * 1.35) <= 1.0) & (t >= t_pel + 0.05)
    hu[_b(aorta)] = blood
    region[_b(aorta)] = _R_OTHER
    asc = (ell(aorta_r, aorta_r, -0.02 * Ac, -0.10 * Bc) <= 1.0) & (t >= t_heart) & (t <= 0.97)
    hu[_b(asc)] = blood
    region[_b(asc)] = _R_OTHER
    trachea = (ell(0.05 * Ac, 0.05 * Ac, 0.0, 0.20 * Bc) <= 1.0) & (t > 0.80)
    tr_wall = (ell(0.065 * Ac, 0.065 * Ac, 0.0, 0.20 * Bc) <= 1.0) & (t > 0.80) & ~trachea
    hu[_b(tr_wall)] = 60.0
    hu[_b(trachea)] = -1000.0
    region[_b(trachea | tr_wall)] = _R_OTHER

    # --- ribs and sternum (thorax and upper abdomen)
    ang = np.arctan2(U, -V)                              # 0 = anterior midline
    rib_e = ell((Ai - muscle * 0.5) * width_t, (Bi - muscle * 0.5) * width_t)
    rib_period = rng.uniform(16.0, 22.0)
    # Ribs slope down from the spine to the front, so an axial slice cuts short arcs, not rings.
    rib_phase = rng.uniform(0, rib_period)
    shell = (np.abs(rib_e - 1.0) < 4.0 / (Bi * 1.0)) & (t >= t_dia - 0.15) & (np.abs(ang) > 0.45) & (np.abs(ang) < 2.75)
    ribs = _on_rib(shell, zmm, ang, rib_phase, rib_period)
    hu[_b(ribs)] = 750.0
    region[_b(ribs)] = _R_OTHER
    sternum = (np.abs(U) < 0.09 * Ac) & (np.abs(V + (Bi - muscle * 0.5)) < 4.0) & (t >= t_dia) & (t < 0.95)
    hu[_b(sternum)] = 650.0
    region[_b(sternum)] = _R_OTHER

    # --- abdomen: liver, spleen, kidneys, bowel
    liver_hu = (105.0 if contrast else 58.0) + rng.uniform(-8, 8)
    t_liv = t_dia - 0.07
    liver = _slab_le1(ell(0.62 * Ac, 0.78 * Bc, -0.36 * Ac, -0.05 * Bc), ((t - t_liv) / 0.17) ** 2)
    liver &= cavity & ~(vb | arch | paraspinal | aorta | heart) & (U < 0.15 * Ac)
    liver &= ~lungs | (U < 0)                            # the liver dome pushes the right lung base up
    zs = _z_range(tt, t_liv - 0.18, t_liv + 0.18)
    liver_tex = _smooth_field(rng, geo, 9.0, zs)
    np.copyto(hu[:, :, zs], liver_hu + 6.0 * liver_tex, where=_b(liver)[:, :, zs])
    region[_b(liver)] = LIVER
    spleen = _slab_le1(ell(0.22 * Ac, 0.30 * Bc, 0.60 * Ac, 0.30 * Bc), ((t - (t_dia - 0.06)) / 0.10) ** 2)
    spleen &= cavity & ~liver & ~lungs
    np.copyto(hu[:, :, zs], liver_hu - 8.0 + 5.0 * liver_tex, where=_b(spleen)[:, :, zs])
    region[_b(spleen)] = ABDOMEN
    del liver_tex
    kidney_hu = (170.0 if contrast else 35.0) + rng.uniform(-15, 15)
    t_kid = t_pel + rng.uniform(0.11, 0.14)
    kid_l = _slab_le1(ell(0.20 * Ac, 0.30 * Bc, 0.42 * Ac, 0.42 * Bc), ((t - t_kid) / 0.12) ** 2)
    kid_r = _slab_le1(ell(0.20 * Ac, 0.30 * Bc, -0.42 * Ac, 0.42 * Bc), ((t - t_kid + 0.02) / 0.12) ** 2)
    kidneys = (kid_l | kid_r) & cavity & ~(vb | arch | paraspinal | liver)
    sinus_l = _slab_le1(ell(0.07 * Ac, 0.11 * Bc, 0.36 * Ac, 0.38 * Bc), ((t - t_kid) / 0.06) ** 2)
    sinus_r = _slab_le1(ell(0.07 * Ac, 0.11 * Bc, -0.36 * Ac, 0.38 * Bc), ((t - t_kid + 0.02) / 0.06) ** 2)
    hu[_b(kidneys)] = kidney_hu
    region[_b(kidneys)] = KIDNEY
    sinus = (sinus_l | sinus_r) & kidneys
    hu[_b(sinus)] = -20.0
    region[_b(sinus)] = _R_OTHER
    # Peritoneal cavity: abdominal lesions sit in the fat between organs (mesentery, nodes).
    peritoneal = cavity & abdomen_z & (region == _R_OTHER) & (hu < 0) & ~sinus & (V < v_vb - r_vb)
    region[_b(peritoneal)] = ABDOMEN
    zs = _z_range(tt, t_pel, t_dia - 0.08)
    # bowel only in the slices zs (elsewhere there is none): the field is made for those slices alone
    bowel_f = _smooth_field(rng, geo, 14.0, zs)
    bowel = np.zeros(shape, dtype=bool)
    gas = np.zeros(shape, dtype=bool)
    bowel[:, :, zs] = _b(peritoneal)[:, :, zs] & (bowel_f > 0.9) & (t[:, :, zs] < t_dia - 0.08)
    gas[:, :, zs] = bowel[:, :, zs] & (bowel_f > 1.7)
    hu[_b(bowel)] = 35.0
    hu[_b(gas)] = -950.0
    region[_b(bowel)] = _R_OTHER
    del bowel_f

    # --- pelvis: iliac wings, femoral heads, bladder, pelvic fat
    pel_cav = cavity & pelvis_z
    region[_b(pel_cav & (region == _R_OTHER) & (hu < 0))] = PELVIS
    iliac_e = ell(0.78 * Ac, 0.55 * Bc, 0.0, 0.25 * Bc)
    iliac = (np.abs(iliac_e - 1.0) < 0.14) & (np.abs(U) > 0.35 * Ac) & pelvis_z & (t > t_pel * 0.45) & cavity
    fem_t = t_pel * 0.25
    femur = _slab_le1(ell(0.17 * Ac, 0.17 * Ac, 0.62 * Ac, 0.0), ((t - fem_t) / 0.09) ** 2) | _slab_le1(
        ell(0.17 * Ac, 0.17 * Ac, -0.62 * Ac, 0.0), ((t - fem_t) / 0.09) ** 2)
    femur &= body
    pel_bone = iliac | femur
    hu[_b(pel_bone)] = 550.0
    region[_b(pel_bone)] = BONE
    bladder = _slab_le1(ell(0.26 * Ac, 0.22 * Bc, 0.0, -0.45 * Bc), ((t - t_pel * 0.45) / (t_pel * 0.5)) ** 2)
    bladder &= cavity
    hu[_b(bladder)] = 8.0
    region[_b(bladder)] = _R_OTHER
    # Bone texture for realism (trabecular variation).
    # (computed at the bone voxels only: a whole-volume field here was the torso's slowest step)
    bone = np.nonzero(hu >= 250.0)
    bone_tex = _smooth_field(rng, geo, 5.0, at=bone)
    bone_tex *= np.float32(60.0)
    hu[bone] += bone_tex
    return _Anatomy(hu=hu, region=region, liver_hu=liver_hu, kidney_hu=kidney_hu)


