"""What to generate: one job per (prompt, place, date), from CLI flags or a prompt-set YAML.

A prompt set generates the whole product prompts x places x dates::

    # prompts/river-deltas.yaml
    prompts:                      # required: one string or a list
      - a satellite image of a river delta
      - a satellite image of farmland
    places:                       # required: name (optional), lat, lon; gsd / cloud_cover per place optional
      - {name: red-river, lat: 21.01, lon: 105.81}
      - {name: mekong, lat: 10.0, lon: 106.3, gsd: 10}
    dates: [2015-06-15, 2020-01-10]   # optional: default --date, else today
    # optional, for every job (a flag given on the command line wins):
    gsd: 10                        # metres per pixel
    cloud_cover: 0.0               # 0..1
    seed: 0                        # image k of every job uses seed + k
    num_images: 1
    steps: 20
    guidance: 7.5
    scheduler: ddim                # ddim | dpm | euler | pndm | ddpm
    size: 64

Stdlib + PyYAML only: the whole set is validated before the model is loaded, so a typo
in the last place is reported at once, not after an hour of sampling.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError

from .metadata import Metadata, validate

TOP_KEYS = {"prompts", "places", "dates", "gsd", "cloud_cover", "seed", "num_images", "steps", "guidance",
            "scheduler", "size"}
PLACE_KEYS = {"name", "lat", "lon", "gsd", "cloud_cover"}
OPTION_KEYS = ("seed", "num_images", "steps", "guidance", "scheduler", "size")


@dataclass(frozen=True)
class Job:
    """One prompt at one place and date; ``place`` names the outputs."""

    prompt: str
    metadata: Metadata
    place: str


def place_name(lat: float, lon: float) -> str:
    return f"{abs(lat):.3f}{'N' if lat >= 0 else 'S'}{abs(lon):.3f}{'E' if lon >= 0 else 'W'}"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")[:40] or "place"


def single_job(prompt: str, lat: float, lon: float, gsd: float, cloud_cover: float, when: str | None) -> Job:
    if not prompt or not prompt.strip():
        raise WorkbenchError("--prompt: empty prompt (describe the image, e.g. 'a satellite image of a river delta')")
    md = validate(lat, lon, gsd, cloud_cover, when)
    return Job(prompt=prompt.strip(), metadata=md, place=place_name(md.lat, md.lon))


def load_prompt_set(path: str | Path, gsd: float | None, cloud_cover: float | None,
                    when: str | None, fallback_gsd: float, fallback_cloud: float,
                    fallback_date: str | None = None) -> tuple[list[Job], dict]:
    """Jobs (prompts x places x dates) and the set's sampling options (seed, steps, ...).

    ``gsd``/``cloud_cover``/``when`` are the command-line values (None when not given): they
    override the file; the fallbacks (the model's defaults) apply when neither says.
    """
    from workbench.config import read_yaml

    src = Path(path)
    try:
        data = read_yaml(src)
    except ValueError as exc:  # PyYAML builds dates itself: 2015-02-30 fails inside the parser
        raise WorkbenchError(f"{src}: {exc} (an impossible date? write YYYY-MM-DD)") from None
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise WorkbenchError(f"{src}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(TOP_KEYS))})")
    prompts = _prompts(src, data.get("prompts"))
    places = _list(src, data, "places")
    dates = _list(src, data, "dates", required=False) or [fallback_date]
    if when is not None:
        dates = [when]
    jobs = []
    for i, place in enumerate(places):
        where = f"{src}: places[{i}]"
        _check_place(where, place)
        g = gsd if gsd is not None else place.get("gsd", data.get("gsd", fallback_gsd))
        c = cloud_cover if cloud_cover is not None else place.get("cloud_cover",
                                                                  data.get("cloud_cover", fallback_cloud))
        name = slug(str(place["name"])) if place.get("name") else None
        for j, day in enumerate(dates):
            labels = {k: f"{where} {k}" for k in ("lat", "lon", "gsd", "cloud_cover")}
            labels["date"] = f"{src}: dates[{j}]"
            md = validate(place["lat"], place["lon"], g, c, None if day is None else str(day), labels=labels)
            jobs.extend(Job(prompt=p, metadata=md, place=name or place_name(md.lat, md.lon)) for p in prompts)
    return jobs, {k: data[k] for k in OPTION_KEYS if k in data}


def _prompts(src: Path, value: Any) -> list[str]:
    prompts = [value] if isinstance(value, str) else value
    if not isinstance(prompts, list) or not prompts:
        raise WorkbenchError(f"{src}: 'prompts' must be a non-empty list of strings")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise WorkbenchError(f"{src}: prompts[{i}] must be a non-empty string")
    return [p.strip() for p in prompts]


def _list(src: Path, data: Mapping, key: str, required: bool = True) -> list:
    value = data.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list) or not value:
        raise WorkbenchError(f"{src}: '{key}' must be a non-empty list")
    return value


def _check_place(where: str, place: Any) -> None:
    if not isinstance(place, dict):
        raise WorkbenchError(f"{where}: expected a mapping like {{name: delta, lat: 21.01, lon: 105.81}}")
    unknown = sorted(set(place) - PLACE_KEYS)
    if unknown:
        raise WorkbenchError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(PLACE_KEYS))})")
    for key in ("lat", "lon"):
        if key not in place:
            raise WorkbenchError(f"{where}: missing '{key}'")
