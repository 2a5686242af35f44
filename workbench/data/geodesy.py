"""Areas on the WGS 84 ellipsoid: the one place a pixel's or a polygon's ground area in a
lon/lat grid comes from, so a map's km^2 table and its polygons' ``area_m2`` agree (a sphere of
111,319 m per degree is 0.2-0.7 % off at mid latitudes)."""

from __future__ import annotations

import math

import numpy as np

WGS84_A = 6_378_137.0
WGS84_F = 1 / 298.257223563


def q_authalic(lat_deg: np.ndarray) -> np.ndarray:
    """The authalic function q(phi) of the WGS 84 ellipsoid: the band between the equator and
    latitude phi, per radian of longitude, has area a^2 q(phi) / 2."""
    e2 = WGS84_F * (2 - WGS84_F)
    e = math.sqrt(e2)
    s = np.sin(np.radians(np.asarray(lat_deg, np.float64)))
    return (1 - e2) * (s / (1 - e2 * s * s) - np.log((1 - e * s) / (1 + e * s)) / (2 * e))


def lonlat_cell_areas_m2(dlon_deg: float, lat_a: np.ndarray, lat_b: np.ndarray) -> np.ndarray:
    """Ground area (m^2, WGS 84 ellipsoid) of lon/lat cells ``dlon_deg`` wide between latitudes
    ``lat_a`` and ``lat_b``: exact for a north-up grid's pixels, which is what the km^2 a map
    reports and its polygons' ``area_m2`` must both come from."""
    return np.abs(math.radians(abs(dlon_deg)) * (q_authalic(lat_a) - q_authalic(lat_b))) * WGS84_A ** 2 / 2
