"""Load an export with seismometer's own loader; print what it loaded as one JSON object.

Run by tests/monitoring/test_seismometer_export.py with the interpreter of the separate
environment `make seismometer-env` makes (seismometer is not a project dependency).
Usage: python seismometer_load.py EXPORT_DIR
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import seismometer
from seismometer.configuration import ConfigProvider
from seismometer.data.loader import loader_factory

folder = Path(sys.argv[1])
os.chdir(folder)  # the export's data_dir is relative to the folder it is opened from
config = ConfigProvider(folder / "config.yml")
frame = loader_factory(config).load_data()
print(
    json.dumps(
        {
            "seismometer": seismometer.__version__,
            "rows": len(frame),
            "columns": sorted(frame.columns),
            "entity_keys": config.entity_keys,
            "target": config.target,
            "output": config.output,
            "cohorts": [c.source for c in config.cohorts],
            "events": sorted(config.events),
            "frame": json.loads(frame.astype(str).to_json(orient="records")),
        }
    )
)
