"""Where tiles come from. Each source writes GeoTIFFs and catalog rows."""
