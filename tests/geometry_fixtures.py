"""Geometry helpers shared by the patch-geometry and reference-parity tests."""

from __future__ import annotations

import numpy as np


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """Direction matrix Rz @ Ry @ Rx for rotations (degrees) about x, y and z: an oblique scan."""
    ax, ay, az = np.deg2rad([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx
