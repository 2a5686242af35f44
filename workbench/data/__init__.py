"""The shared data layer: GeoTIFF I/O, the tile catalog, sources, datasets and samplers."""
