"""lineside: from labelled defect data to a reject signal beside the production line.

The distribution is laid out as four folders in the repository (`edge/`, `export/`,
`train/`, `calibration/`) that import as `lineside.edge`, `lineside.export`,
`lineside.train` and `lineside.calibration`.
"""

__version__ = "0.1.0"
