"""The synthetic export: drawn weld photos with known flags, Table 1 label noise, and the digit stand-in."""
