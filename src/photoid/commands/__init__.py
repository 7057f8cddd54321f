"""The shared commands, each a thin layer of options and printing over the library: `photoid train`, `recipes`,
`records`, `identify`, `export`, `catalog` and `calibrate` (competition commands live in their folders)."""
