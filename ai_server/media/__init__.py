"""Media inputs (spec §8): analysing any image into the unified visual context, and historical questions."""
